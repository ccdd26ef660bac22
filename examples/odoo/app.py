"""An Odoo-style login flow as a plain WSGI app, its sessions kept by sessiongate.

It mimics what Odoo does with sessions: /web/session/authenticate checks a
login, puts uid, login, db and context in the session and rotates the session
id; every request reads the session; /web/session/destroy ends it. Run it with
any WSGI server:

    gunicorn -b 127.0.0.1:8069 app:application      (from examples/odoo)
"""
import json

USERS = {"admin": {"password": "admin", "uid": 2}, "demo": {"password": "demo", "uid": 6}}


def application(environ, start_response):
    session = json.loads(environ.get("HTTP_X_SESSION", "{}"))
    path, headers = environ["PATH_INFO"], [("Content-Type", "application/json")]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    params = json.loads(environ["wsgi.input"].read(length) or b"{}").get("params", {})

    if path == "/web/session/authenticate":
        user = USERS.get(params.get("login"))
        if not user or user["password"] != params.get("password"):
            start_response("200 OK", headers)
            return [json.dumps({"error": {"message": "Access Denied"}}).encode()]
        session = {"uid": user["uid"], "login": params["login"], "db": params.get("db", "odoo"),
                   "context": {"lang": "en_US", "tz": "Europe/Brussels", "uid": user["uid"]}}
        # Odoo rotates the session id at login, to defeat fixation: so do we.
        headers += [("X-Session-Update", json.dumps(session)), ("X-Session-Action", "rotate")]
    elif path == "/web/session/destroy":
        session = {}
        headers.append(("X-Session-Action", "destroy"))
    elif path != "/web/session/get_session_info":
        start_response("404 Not Found", headers)
        return [b'{"error": "not found"}']
    start_response("200 OK", headers)
    info = {k: session.get(k) for k in ("uid", "login", "db", "context")}
    return [json.dumps({"result": info}).encode()]
