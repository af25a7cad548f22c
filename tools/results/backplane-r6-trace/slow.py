exec(open('parse.py').read().split("rows = []")[0])
import bisect
ts=[p[0] for p in pkts]
rows=[(g,e) for g,e in ev.items() if 'post' in e and 'eval' in e]
rows.sort(key=lambda r: r[1]['eval']-r[1]['post'])
def name(p):
    if p==NP: return 'node'
    if p==RP: return 'redis'
    if p==writer_port: return 'nodeW'
    if p in pubport: return 'pub'
    return 'p%d'%p
for g,e in rows[-6:]:
    print('--- event',g,'post->eval %.0f us'%((e['eval']-e['post'])*1e6))
    i=bisect.bisect_left(ts,e['post']-0.0015); j=bisect.bisect_right(ts,e['eval']+0.0001)
    last=None; n=0
    for t,sp,dp,pay in pkts[i:j]:
        k=(name(sp),name(dp) if not str(name(dp)).startswith('p') else 'sub')
        if k==last and n>2: continue
        n = n+1 if k==last else 0; last=k
        print('  %+7.0f %s->%s %4d %r'%((t-e['post'])*1e6,k[0],k[1],len(pay),pay[:40]))
