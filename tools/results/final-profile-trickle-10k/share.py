import sys,re
for f in sys.argv[1:]:
    k=o=l=0; top=[]
    for line in open(f):
        m=re.match(r'\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)',line)
        if not m: continue
        p=float(m.group(1)); dso=m.group(2); sym=m.group(4).strip()
        if dso.startswith('[kernel'): k+=p
        elif dso.startswith('libc'): l+=p
        else:
            o+=p; top.append((p,sym[:70]))
    print(f, f"kernel {k:.1f} own {o:.1f} libc {l:.1f}")
    for p,s in top[:9]: print(f"   {p:.2f} {s}")
