"""A CoAP device that accepts observers of /temperature (aiocoap) but never notifies them:
as a device that rebooted and forgot who observed it. Answers VALUE, with Max-Age 1, only
to requests. Runs until killed.

Usage: aiocoap_forgetful_server.py PORT VALUE
"""

import asyncio
import sys

import aiocoap
import aiocoap.resource as resource


class Temperature(resource.ObservableResource):
    def __init__(self, value):
        super().__init__()
        self.value = value

    async def render_get(self, request):
        return aiocoap.Message(payload=self.value, max_age=1)


async def main(port, value):
    root = resource.Site()
    root.add_resource(["temperature"], Temperature(value.encode()))
    # UDP alone: by default aiocoap also listens on TCP at the same port number, which
    # another program on the machine may hold.
    await aiocoap.Context.create_server_context(root, bind=("127.0.0.1", port), transports=["udp6"])
    print("listening", flush=True)
    await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
