"""A loopback SMTP server for taskflow-notify's email tests (run by tests/channels/email.rs).

Usage: smtp_capture.py <directory> [--rcpt-reply "451 4.3.0 Try later"]

Listens on 127.0.0.1 on a free port and prints "PORT <n>" once it accepts connections. Every
accepted message is parsed with Python's own email package (an implementation independent of
the Rust sender) and saved, before the server answers 250, as <directory>/<nnnn>.json:
the envelope, the From/To/Subject headers decoded, and every leaf part's content type and
decoded content; the raw message goes next to it as <nnnn>.eml. With --rcpt-reply every
recipient is answered with that reply instead of being accepted. No STARTTLS is offered.
The server exits when its standard input closes, so it never outlives the test process.
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import sys
import threading

from aiosmtpd.smtp import SMTP


class Capture:
    def __init__(self, directory, rcpt_reply):
        self.directory = directory
        self.rcpt_reply = rcpt_reply
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, f"{self.count:04}")
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = [
            {"content_type": part.get_content_type(), "content": part.get_content()}
            for part in message.walk()
            if not part.is_multipart()
        ]
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(message["From"]),
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
            "content_type": message.get_content_type(),
            "parts": parts,
        }
        with open(base + ".eml", "wb") as raw:
            raw.write(envelope.content)
        # Written under a temporary name and renamed, so readers never see half a file.
        with open(base + ".json.tmp", "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 Message accepted"


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--rcpt-reply")
    args = parser.parse_args()
    handler = Capture(args.directory, args.rcpt_reply)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="capture.test"), "127.0.0.1", 0
    )
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
