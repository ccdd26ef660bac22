"""A small shop in Flask whose sessions sessiongate keeps.

    gunicorn -b 127.0.0.1:9001 app:app      (from examples/flask)
"""
import os

from flask import Flask, jsonify, request, session

from sessiongate_flask import SessiongateSessionInterface

app = Flask(__name__)
app.session_interface = SessiongateSessionInterface()
NAME = f"flask-{os.getpid()}"


def state():
    return {"app": NAME, "user": session.get("login"), "cart": session.get("cart", [])}


@app.get("/whoami")
def whoami():
    return jsonify(state())


@app.post("/login")
def login():
    # A real app checks the password here.
    session["uid"] = abs(hash(request.form["login"])) % 10000
    session["login"] = request.form["login"]
    session.login(request.form["login"])  # bound to the user, with a new sid
    return jsonify(state())


@app.post("/cart/add")
def add_to_cart():
    session["cart"] = session.get("cart", []) + [request.form["item"]]
    return jsonify(state())


@app.post("/logout")
def logout():
    session.destroy()
    return jsonify({"app": NAME, "user": None, "cart": []})


@app.post("/logout-everywhere")
def logout_everywhere():
    # "Log out all my devices": every session bound to this user ends.
    session.logout_everywhere()
    return jsonify({"app": NAME, "user": None, "cart": []})
