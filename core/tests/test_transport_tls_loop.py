"""funboost.transport.loop_thread and funboost.transport.tls (server transports on asyncio, TLS from paths)."""
import asyncio
import threading

import pytest

from funboost.transport.loop_thread import LoopThread, shared_loop


def test_loop_thread_runs_coroutines_and_callbacks():
    lt = LoopThread("test-loop")
    try:
        async def double(x):
            await asyncio.sleep(0)
            return threading.current_thread().name, x * 2
        assert lt.run(double(21), timeout=5) == ("test-loop", 42)
        seen = threading.Event()
        lt.call_soon(seen.set)
        assert seen.wait(5)
        with pytest.raises(TimeoutError):
            lt.run(asyncio.sleep(10), timeout=0.05)
    finally:
        lt.stop()
    assert not lt.thread.is_alive()


def test_shared_loop_is_one_per_name():
    assert shared_loop("funboost-test-shared") is shared_loop("funboost-test-shared")
    assert shared_loop("funboost-test-shared") is not shared_loop("funboost-test-other")



def test_tls_contexts_from_paths(tmp_path):
    import shutil
    import ssl
    import subprocess

    from funboost.transport.tls import client_ssl_context, server_ssl_context
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout",
                    str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem"), "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    server = server_ssl_context(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert server.verify_mode == ssl.CERT_NONE and server.minimum_version == ssl.TLSVersion.TLSv1_2
    mutual = server_ssl_context(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), client_ca_file=str(tmp_path / "c.pem"))
    assert mutual.verify_mode == ssl.CERT_REQUIRED
    client = client_ssl_context(str(tmp_path / "c.pem"), str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
