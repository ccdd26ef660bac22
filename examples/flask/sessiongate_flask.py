"""Flask sessions kept by sessiongate: a drop-in `SessionInterface`.

The session arrives as the X-Session header; what the request changed goes
back as X-Session-Update (only changed keys, so concurrent requests that
touch different keys keep each other's changes), and session.rotate() or
session.destroy() become X-Session-Action. Flask's `session.permanent = True`
("remember me") becomes `X-Session-Action: persist`: sessiongate gives the
cookie a Max-Age; actions combine, as in `rotate, persist`.
"""
import json

from flask.sessions import SessionInterface, SessionMixin


class GateSession(dict, SessionMixin):
    def __init__(self, raw, sid):
        super().__init__(json.loads(raw))
        self.original = json.loads(raw)  # a separate copy, to see nested changes
        self.sid, self.action = sid, None

    def rotate(self):  # at login: a new session id, same data
        self.action = "rotate"

    def destroy(self):  # at logout
        self.clear()
        self.action = "destroy"


class SessiongateSessionInterface(SessionInterface):
    def open_session(self, app, request):
        return GateSession(request.headers.get("X-Session", "{}"), request.headers.get("X-Session-Id"))

    def save_session(self, app, session, response):
        changed = {k: v for k, v in session.items() if k not in session.original or session.original[k] != v}
        changed.update({k: None for k in session.original if k not in session})
        if changed and session.action != "destroy":
            response.headers["X-Session-Update"] = json.dumps(changed)  # ASCII JSON by default
        actions = [session.action] if session.action else []
        # session.permanent is Flask's "_permanent" key: newly set, it asks for a persistent cookie.
        if session.action != "destroy" and session.get("_permanent") and not session.original.get("_permanent"):
            actions.append("persist")
        if actions:
            response.headers["X-Session-Action"] = ", ".join(actions)
