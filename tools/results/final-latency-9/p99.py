import json,sys,glob,statistics as st,re
d=sys.argv[1]; scen=sys.argv[2] if len(sys.argv)>2 else 'latency-100'
runs={}
for f in glob.glob(f'{d}/*-{scen}-*.json'):
    m=re.match(rf'.*/(.+)-{scen}-(\d+)\.json',f)
    j=json.load(open(f))
    runs.setdefault(m.group(1),{})[int(m.group(2))]=j['latency_us']
base="probe" if "probe" in runs else "sseloop"
for t in sorted(runs):
    p99=[runs[t][i]['p99'] for i in sorted(runs[t])]
    p50=[runs[t][i]['p50'] for i in sorted(runs[t])]
    line=f"{t:12s} p99 med {st.median(p99)/1000:.2f} ms p50 med {st.median(p50):.0f} us"
    if t!=base and base in runs:
        r=[runs[t][i]['p99']/runs[base][i]['p99'] for i in sorted(runs[t]) if i in runs[base]]
        r50=[runs[t][i]['p50']/runs[base][i]['p50'] for i in sorted(runs[t]) if i in runs[base]]
        line+=f" | p99/probe paired med {st.median(r):.3f} [{min(r):.2f}-{max(r):.2f}] | p50/probe paired {st.median(r50):.3f}"
    print(line, [round(x/1000,2) for x in p99])
