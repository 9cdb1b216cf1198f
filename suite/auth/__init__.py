"""One trust boundary for the whole suite: API keys (``keys``), roles (``roles``), the policy table
mapping each service's routes to permissions (``policy``), and the ASGI layer every service runs
(``layer``, installed by ``suite.instrument``). ``suite keys`` is ``cli``."""
