"""Observes one CoAP resource with aiocoap (an independent CoAP implementation) and prints
the payload of the first response and of each notification, one per line, for `seconds`."""
import asyncio
import sys

from aiocoap import GET, Context, Message


async def main(uri: str, seconds: float) -> None:
    context = await Context.create_client_context()
    request = context.request(Message(code=GET, uri=uri, observe=0))
    first = await request.response
    print(f"{first.code} {first.payload.decode()}", flush=True)

    async def notifications() -> None:
        async for n in request.observation:
            print(f"{n.code} {n.payload.decode()}", flush=True)

    try:
        await asyncio.wait_for(notifications(), seconds)
    except asyncio.TimeoutError:
        pass
    await context.shutdown()


asyncio.run(main(sys.argv[1], float(sys.argv[2])))
