import torch, sys
from tritonep import EPNet
torch.manual_seed(0)
dev = "cuda"
def run(cuda_graph, mode):
    torch.manual_seed(0)
    a = EPNet([50, 129, 33, 10], backend="torch", feedback=0.1, nudge=0.2, T=3, K=2).to(dev)
    b = EPNet([50, 129, 33, 10], backend="triton", feedback=0.1, nudge=0.2, T=3, K=2, cuda_graph=cuda_graph).to(dev)
    b.load_state_dict(a.state_dict())
    x = torch.rand(64, 50, device=dev); y = torch.randint(0, 10, (64,), device=dev)
    opts = [torch.optim.Adam(n.parameters(), lr=1e-2) for n in (a, b)]
    for step in range(5):
        out = []
        for n, opt in zip((a, b), opts):
            if mode == "none":
                n.zero_grad(set_to_none=True)
            else:
                n.zero_grad(set_to_none=(mode == "adam_none"))
            loss, _ = n.ep_step(x, y, T=4, K=3)
            out.append((float(loss), [p.grad.clone() for p in n.parameters()]))
        gd = max(float((g1 - g2).abs().max()) for g1, g2 in zip(out[0][1], out[1][1]))
        gn = max(float(g.abs().max()) for g in out[0][1])
        print(f"graph={cuda_graph} mode={mode} step {step}: loss torch {out[0][0]:.5f} triton {out[1][0]:.5f} max|dgrad| {gd:.2e} (|g| {gn:.2e})", flush=True)
        for n, opt in zip((a, b), opts):
            opt.step()
        # keep the triton net on the torch net's params (copy in place)
        with torch.no_grad():
            for p, q in zip(a.parameters(), b.parameters()):
                q.copy_(p)
    print("graphs:", len(b.backend_state.graphs), "off:", b.backend_state.graphs.off, flush=True)
for g in (False, True):
    for m in ("adam_none", "adam_zero"):
        run(g, m)
