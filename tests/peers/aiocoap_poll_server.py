"""A CoAP device that serves a reading without Observe (aiocoap): GET /temperature answers
its value with Max-Age 5; PUT /temperature sets it. Runs until killed.

Usage: aiocoap_poll_server.py PORT
"""

import asyncio
import sys

import aiocoap
import aiocoap.resource as resource


class Temperature(resource.Resource):
    def __init__(self):
        super().__init__()
        self.value = b"18.5"

    async def render_get(self, request):
        return aiocoap.Message(payload=self.value, max_age=5)

    async def render_put(self, request):
        self.value = request.payload
        return aiocoap.Message(code=aiocoap.CHANGED)


async def main(port):
    root = resource.Site()
    root.add_resource(["temperature"], Temperature())
    # UDP alone: by default aiocoap also listens on TCP at the same port number, which
    # another program on the machine may hold.
    await aiocoap.Context.create_server_context(root, bind=("127.0.0.1", port), transports=["udp6"])
    print("listening", flush=True)
    await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
