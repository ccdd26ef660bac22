"""Tornado sessions kept by sessiongate: a RequestHandler base class.

`self.session` is the session from the X-Session header; on finish(), what the
request changed goes back as X-Session-Update (changed keys only), and
rotate_session() / destroy_session() / persist_session() ("remember me": a
persistent cookie) become X-Session-Action, combined as in `rotate, persist`. A WebSocket
handler reads the session of its handshake with session_of(self.request).

Users and devices: login(user) binds the session to a user id (and rotates
it), self.user is the id a bound session carries, logout_everywhere() ends
every session of that user, this one too, and logout_others() every other
one (after a password change).
"""
import json

import tornado.web


def session_of(request):
    return json.loads(request.headers.get("X-Session", "{}"))


class SessionHandler(tornado.web.RequestHandler):
    def prepare(self):
        self.session, self._original = session_of(self.request), session_of(self.request)
        self._action = None
        self.user, self._binds = self.request.headers.get("X-Session-User"), None

    def login(self, user):  # at login: bind to the user, with a new session id
        self.user = self._binds = str(user)
        self._action = "rotate"

    def logout_everywhere(self):  # every session of this user ends, this one too
        self.session.clear()
        self._action = "destroy-all"

    def logout_others(self):  # every other session of this user ends
        self._action = ", ".join(a for a in (self._action, "destroy-others") if a)

    def rotate_session(self):  # at login: a new session id, same data
        self._action = "rotate"

    def destroy_session(self):  # at logout
        self.session.clear()
        self._action = "destroy"

    def persist_session(self):  # "remember me": the cookie outlives the browser session
        self._persist = True

    def finish(self, chunk=None):
        session, original = getattr(self, "session", {}), getattr(self, "_original", {})
        action = getattr(self, "_action", None)
        actions = [action] if action else []
        if getattr(self, "_persist", False) and action not in ("destroy", "destroy-all"):
            actions.append("persist")
        changed = {k: v for k, v in session.items() if k not in original or original[k] != v}
        changed.update({k: None for k in original if k not in session})
        if changed and action not in ("destroy", "destroy-all"):
            self.set_header("X-Session-Update", json.dumps(changed))
        if getattr(self, "_binds", None):
            self.set_header("X-Session-User", self._binds)
        if actions:
            self.set_header("X-Session-Action", ", ".join(actions))
        return super().finish(chunk)
