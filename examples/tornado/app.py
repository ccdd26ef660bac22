"""The same small shop in Tornado, plus a WebSocket that knows who is logged in.

    python app.py --port 9003      (from examples/tornado)
"""
import asyncio
import os
import sys

import tornado.web
import tornado.websocket

from sessiongate_tornado import SessionHandler, session_of

NAME = f"tornado-{os.getpid()}"


class Shop(SessionHandler):
    def state(self):
        return {"app": NAME, "user": self.session.get("login"), "cart": self.session.get("cart", [])}


class WhoAmI(Shop):
    def get(self):
        self.write(self.state())


class Login(Shop):
    def post(self):
        # A real app checks the password here.
        self.session["uid"] = abs(hash(self.get_argument("login"))) % 10000
        self.session["login"] = self.get_argument("login")
        self.login(self.get_argument("login"))  # bound to the user, with a new sid
        self.write(self.state())


class AddToCart(Shop):
    def post(self):
        self.session["cart"] = self.session.get("cart", []) + [self.get_argument("item")]
        self.write(self.state())


class Logout(Shop):
    def post(self):
        self.destroy_session()
        self.write({"app": NAME, "user": None, "cart": []})


class LogoutEverywhere(Shop):
    def post(self):
        # "Log out all my devices": every session bound to this user ends.
        self.logout_everywhere()
        self.write({"app": NAME, "user": None, "cart": []})


class Live(tornado.websocket.WebSocketHandler):
    def open(self):
        # The handshake went through sessiongate: its session is right here.
        self.write_message({"app": NAME, "user": session_of(self.request).get("login")})

    def on_message(self, message):
        self.write_message(message)


async def main(port):
    routes = [(r"/whoami", WhoAmI), (r"/login", Login), (r"/cart/add", AddToCart), (r"/logout", Logout),
              (r"/logout-everywhere", LogoutEverywhere), (r"/ws", Live)]
    tornado.web.Application(routes).listen(port, address="127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 9003
    asyncio.run(main(port))
