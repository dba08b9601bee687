"""Memory of idle kept-alive HTTP connections: N connections to a live stream's HLS, each
fetching the media playlist once and then left open and idle; the server's RSS (from /proc)
before and 2 s after, then after a second request on every connection. Prints one JSON line.
Usage: http_idle.py MULTIVARIANT_URL N SERVER_PID"""
import json
import asyncio, sys, re, time
url, n, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = re.match(r'http://([^/:]+):(\d+)(/.*)', url); host, port, path = m.group(1), int(m.group(2)), m.group(3)
def rss():
    for l in open(f'/proc/{pid}/status'):
        if l.startswith('VmRSS'): return int(l.split()[1])
async def one(p):
    r, w = await asyncio.open_connection(host, port)
    w.write(f'GET {p} HTTP/1.1\r\nHost: x\r\n\r\n'.encode()); await w.drain()
    head = await r.readuntil(b'\r\n\r\n')
    ln = int(re.search(rb'(?i)content-length: (\d+)', head).group(1))
    body = await r.readexactly(ln)
    return r, w, body
async def main():
    r, w, body = await one(path)
    media = [l for l in body.decode().splitlines() if l and not l.startswith('#')][0]
    mpath = path.rsplit('/',1)[0] + '/' + media
    await asyncio.sleep(1)
    base = rss()
    conns = []
    for i in range(0, n, 100):
        conns += await asyncio.gather(*[one(mpath) for _ in range(min(100, n-i))])
    await asyncio.sleep(2)
    after = rss()
        # a second request on each
    for i in range(0, n, 100):
        for (r_, w_, _) in conns[i:i+100]:
            w_.write(f'GET {mpath} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        for (r_, w_, _) in conns[i:i+100]:
            head = await r_.readuntil(b'\r\n\r\n'); ln = int(re.search(rb'(?i)content-length: (\d+)', head).group(1)); await r_.readexactly(ln)
    await asyncio.sleep(2)
    after2 = rss()
    print(json.dumps({'connections': n, 'rss_kib_before': base, 'rss_kib_idle': after,
                      'kib_per_idle_connection': round((after - base) / n, 2),
                      'rss_kib_after_second_request': after2,
                      'kib_per_connection_after_second': round((after2 - base) / n, 2)}))
asyncio.run(main())
