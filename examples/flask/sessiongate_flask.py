"""Flask sessions kept by sessiongate: a drop-in `SessionInterface`.

The session arrives as the X-Session header; what the request changed goes
back as X-Session-Update (only changed keys, so concurrent requests that
touch different keys keep each other's changes), and session.rotate() or
session.destroy() become X-Session-Action. Flask's `session.permanent = True`
("remember me") becomes `X-Session-Action: persist`: sessiongate gives the
cookie a Max-Age; actions combine, as in `rotate, persist`.

Users and devices: session.login(user) binds the session to a user id (and
rotates it), session.user is the id a bound session carries,
session.logout_everywhere() ends every session of that user, this one too,
and session.logout_others() every other one (after a password change).
"""
import json

from flask.sessions import SessionInterface, SessionMixin


class GateSession(dict, SessionMixin):
    def __init__(self, raw, sid, user=None):
        super().__init__(json.loads(raw))
        self.original = json.loads(raw)  # a separate copy, to see nested changes
        self.sid, self.action = sid, None
        self.user, self.binds = user, None  # the bound user; a new binding

    def login(self, user):  # at login: bind to the user, with a new session id
        self.user = self.binds = str(user)
        self.action = "rotate"

    def logout_everywhere(self):  # every session of this user ends, this one too
        self.clear()
        self.action = "destroy-all"

    def logout_others(self):  # every other session of this user ends
        self.action = ", ".join(a for a in (self.action, "destroy-others") if a)

    def rotate(self):  # at login: a new session id, same data
        self.action = "rotate"

    def destroy(self):  # at logout
        self.clear()
        self.action = "destroy"


class SessiongateSessionInterface(SessionInterface):
    def open_session(self, app, request):
        headers = request.headers
        return GateSession(headers.get("X-Session", "{}"), headers.get("X-Session-Id"), headers.get("X-Session-User"))

    def save_session(self, app, session, response):
        changed = {k: v for k, v in session.items() if k not in session.original or session.original[k] != v}
        changed.update({k: None for k in session.original if k not in session})
        if changed and session.action not in ("destroy", "destroy-all"):
            response.headers["X-Session-Update"] = json.dumps(changed)  # ASCII JSON by default
        if session.binds:
            response.headers["X-Session-User"] = session.binds
        actions = [session.action] if session.action else []
        # session.permanent is Flask's "_permanent" key: newly set, it asks for a persistent cookie.
        ending = session.action in ("destroy", "destroy-all")
        if not ending and session.get("_permanent") and not session.original.get("_permanent"):
            actions.append("persist")
        if actions:
            response.headers["X-Session-Action"] = ", ".join(actions)
