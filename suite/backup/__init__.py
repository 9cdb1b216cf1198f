"""Backup sets of the whole suite (vector store + every SQLite database), restore and rollback.

``sets`` (folder + manifest, verify, retention), ``sqlite`` (online copies), ``vectors`` (snapshot +
portable export), ``runner`` (create / restore / rollback), ``routes`` (the RAG service's admin route),
``cli`` (``suite backup …``, ``suite restore SET``).
"""
