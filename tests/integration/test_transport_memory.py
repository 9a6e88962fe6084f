"""The API transport's TLS connections take 64 KiB read buffers, not asyncio's 256 KiB (a pool of
64 connections was 16 MiB of the operator's memory), and bodies far larger than one buffer still
arrive whole, one at a time and many at once."""

from __future__ import annotations

import asyncio
import asyncio.sslproto

from kaito_core.engine import CONFIGMAP, NAMESPACE, ApiClientTransport, Client
from kaito_core.engine.transport import TLS_READ_BUFFER
from kaito_core.testing import ControlPlane


async def test_small_tls_read_buffers_still_read_large_bodies(light_control_plane: ControlPlane) -> None:
    client = Client(await ApiClientTransport.from_kubeconfig(light_control_plane.kubeconfig))
    try:
        assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER == 64 * 1024
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "big"}}, kind=NAMESPACE)
        data = {f"k{i}": f"{i:06d}" * 5000 for i in range(20)}  # 600 KB: ten buffers' worth
        await client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big", "namespace": "big"},
                             "data": data}, kind=CONFIGMAP)
        got = await asyncio.gather(*(client.get(CONFIGMAP, "big", "big") for _ in range(16)))
        assert all(cm["data"] == data for cm in got)
        listed = await client.list(CONFIGMAP, "big")
        assert [cm["data"] for cm in listed.items if cm["metadata"]["name"] == "big"] == [data]
    finally:
        await client.close()
