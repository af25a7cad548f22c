exec(open('parse.py').read().split("rows = []")[0])
# for each event: the node's subscriber writes carrying it; report the largest gap between consecutive writes
import collections
w=collections.defaultdict(list)
posts=sorted(e['post'] for e in ev.values() if 'post' in e)
import bisect
for t,sp,dp,pay in pkts:
    if sp==NP and dp not in pubport:
        for m in HEX.finditer(pay):
            w[int(m.group(2),16)].append(t)
big=[]
for g,ts in w.items():
    ts.sort()
    for a,b in zip(ts,ts[1:]):
        if b-a>0.001:
            i=bisect.bisect_left(posts,b-0.0003)
            nearpost = (posts[i]-b)*1e6 if i<len(posts) else None
            big.append((g,(b-a)*1e6,len(ts),nearpost))
print('events with a >1ms gap inside their fan-out:',len(big),'of',len(w))
for x in big[:15]: print('event %d gap %.0fus writes %d next-post-vs-resume %s'%x)
