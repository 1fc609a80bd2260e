"""The editor's desk: a web desk at /desk/ where a communications team writes stories, previews and sends the
digest and looks after its list, without a terminal (docs/how-to/desk.md).

Flask (routing, request parsing, the session interface) with Flask-WTF (forms, CSRF tokens); passwords hashed
with argon2id (argon2-cffi); sessions, sign-in attempts and the audit log live in the state database
(``state/desk.py``).  Every page is server-rendered and every task works without JavaScript.
"""
