import struct, re, sys, collections
NP, RP = 18080, 16379
f = open(sys.argv[1] if len(sys.argv) > 1 else '/tmp/trace/cap.pcap', 'rb')
gh = f.read(24)
magic = struct.unpack('<I', gh[:4])[0]
nano = magic == 0xa1b23c4d
link = struct.unpack('<I', gh[20:24])[0]
pkts = []
while True:
    h = f.read(16)
    if len(h) < 16: break
    s, us, incl, orig = struct.unpack('<IIII', h)
    d = f.read(incl)
    t = s + us / (1e9 if nano else 1e6)
    off = 14 if link == 1 else 16 if link == 113 else 4
    ip = d[off:]
    if len(ip) < 20 or ip[0] >> 4 != 4: continue
    ihl = (ip[0] & 15) * 4
    tcp = ip[ihl:]
    sp, dp = struct.unpack('>HH', tcp[:4])
    doff = (tcp[12] >> 4) * 4
    pay = tcp[doff:]
    if not pay: continue
    pkts.append((t, sp, dp, pay))
HEX = re.compile(rb'([0-9a-f]{16})([0-9a-f]{16})abcdef')
ev = collections.defaultdict(dict)
writer_port = None
for t, sp, dp, pay in pkts:
    if dp == RP and b'EVALSHA' in pay:
        writer_port = sp
for t, sp, dp, pay in pkts:
    for m in HEX.finditer(pay):
        g = int(m.group(2), 16)
        e = ev[g]
        if dp == NP:
            e.setdefault('post', t)
        elif dp == RP:
            e.setdefault('eval', t)
        elif sp == RP:
            k = 'wrep' if dp == writer_port else 'xread'
            e.setdefault(k, t)
        elif sp == NP:
            e.setdefault('sub0', t); e['subN'] = t
pubport = set(sp for t, sp, dp, pay in pkts if dp == NP and pay.startswith(b'POST'))
resp = [t for t, sp, dp, pay in pkts if sp == NP and dp in pubport and b'HTTP/1.1 200' in pay]
import bisect as _b
for g, e in ev.items():
    if 'post' in e:
        i = _b.bisect_left(resp, e['post'])
        if i < len(resp): e['resp'] = resp[i]
# writer reply carries no body: take the first writer reply packet after eval
wrep = [t for t, sp, dp, pay in pkts if sp == RP and dp == writer_port]
import bisect
for g, e in ev.items():
    if 'eval' in e:
        i = bisect.bisect_left(wrep, e['eval'])
        if i < len(wrep): e['wrep'] = wrep[i]
rows = []
for g in sorted(ev):
    e = ev[g]
    if not all(k in e for k in ('post', 'sub0', 'subN')): continue
    rows.append((g, e))
def us(a, b): return (b - a) * 1e6 if a is not None and b is not None else float('nan')
def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(len(xs) * p))]
cols = [('post->resp', 'post', 'resp'), ('post->eval', 'post', 'eval'), ('eval->wrep', 'eval', 'wrep'), ('eval->xread', 'eval', 'xread'),
        ('wrep->sub0', 'wrep', 'sub0'), ('post->sub0', 'post', 'sub0'), ('sub0->subN', 'sub0', 'subN'), ('post->subN', 'post', 'subN')]
print('events', len(rows))
for name, a, b in cols:
    xs = [us(e.get(a), e.get(b)) for g, e in rows if a in e and b in e]
    if xs: print('%-12s p50 %7.0f p90 %7.0f p99 %7.0f max %7.0f us (n=%d)' % (name, pct(xs, .5), pct(xs, .9), pct(xs, .99), max(xs), len(xs)))
worst = sorted(rows, key=lambda r: us(r[1]['post'], r[1]['subN']))[-15:]
sys.exit(0)
print('slowest events (us from post):')
for g, e in worst:
    print(g, ' '.join('%s=%.0f' % (k, us(e['post'], e[k])) for k in ('eval', 'wrep', 'xread', 'sub0', 'subN') if k in e))
