"""A minimal Tornado pub/sub broker, a peer in the Chorus comparison suite.

Written the way Tornado's websocket chat tutorials write it: a WebSocketHandler
per connection, a class-level dict of channel -> set of handlers, and
write_message() to every subscriber. It speaks just enough of Chorus protocol
v1 (proto/PROTOCOL.md sections 1-2) for chorus-bench to drive it unchanged:
hello, sub -> ack with the channel's seq, pub -> ack and one msg with the next
per-channel seq to every subscriber, ping -> pong. No history, auth, limits.

    /usr/bin/python3 tests/bench/peers/tornado/server.py --port 9000

Uses Debian's python3-tornado (6.2).
"""

import argparse
import itertools
import json
import signal
import time

import tornado.ioloop
import tornado.web
import tornado.websocket

channels = {}  # name -> {"seq": int, "subs": set of handlers}
client_ids = itertools.count(1)


class Health(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.write('{"status":"ok"}')


class Broker(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin):
        return True

    def open(self):
        self.client = "t%012x" % next(client_ids)
        self.subs = set()
        self.send({"op": "hello", "v": 1, "node": "tornado", "client": self.client})

    def send(self, obj):
        try:
            self.write_message(json.dumps(obj, separators=(",", ":")))
        except tornado.websocket.WebSocketClosedError:
            pass

    def on_message(self, raw):
        if isinstance(raw, bytes):
            return
        try:
            m = json.loads(raw)
        except ValueError:
            self.send({"op": "err", "code": "bad_request"})
            return
        op, ch, mid = m.get("op"), m.get("ch"), m.get("id")

        def reply(obj):
            if isinstance(mid, int):
                obj["id"] = mid
                self.send(obj)

        if op in ("sub", "pub", "unsub") and not isinstance(ch, str):
            self.send({"op": "err", "id": mid, "code": "bad_channel"})
        elif op == "sub":
            c = channels.setdefault(ch, {"seq": 0, "subs": set()})
            c["subs"].add(self)
            self.subs.add(ch)
            reply({"op": "ack", "ch": ch, "epoch": "tornado-1", "seq": c["seq"]})
        elif op == "unsub":
            self.leave(ch)
            reply({"op": "ack", "ch": ch})
        elif op == "pub":
            c = channels.setdefault(ch, {"seq": 0, "subs": set()})
            c["seq"] += 1
            seq = c["seq"]
            reply({"op": "ack", "ch": ch, "epoch": "tornado-1", "seq": seq})
            frame = json.dumps(
                {"op": "msg", "ch": ch, "seq": seq, "ts": int(time.time() * 1000),
                 "client": self.client, "data": m.get("data")},
                separators=(",", ":"))
            for s in list(c["subs"]):
                try:
                    s.write_message(frame)
                except tornado.websocket.WebSocketClosedError:
                    pass
            if not c["subs"]:
                channels.pop(ch, None)
        elif op == "ping":
            reply({"op": "pong"})
        else:
            self.send({"op": "err", "id": mid, "code": "unknown_op"})

    def leave(self, ch):
        c = channels.get(ch)
        if c:
            c["subs"].discard(self)
            if not c["subs"]:
                channels.pop(ch, None)
        self.subs.discard(ch)

    def on_close(self):
        for ch in list(self.subs):
            self.leave(ch)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args()
    app = tornado.web.Application([(r"/healthz", Health), (r"/ws", Broker)],
                                  websocket_max_message_size=65536)
    app.listen(a.port, address=a.host, backlog=4096)
    loop = tornado.ioloop.IOLoop.current()
    signal.signal(signal.SIGTERM, lambda *_: loop.add_callback_from_signal(loop.stop))
    signal.signal(signal.SIGINT, lambda *_: loop.add_callback_from_signal(loop.stop))
    print("tornado: listening on %s:%d" % (a.host, a.port), flush=True)
    loop.start()


if __name__ == "__main__":
    main()
