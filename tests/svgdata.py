"""Reading plotted data back out of the SVGs the library writes (each series a group
whose id names it, ``tritonep.analysis.curves``)."""
import re


def markers(svg: str, gid: str) -> list[tuple[float, float]]:
    """The (x, y) display positions of the markers of the series drawn with id ``gid``."""
    start = svg.index(f'<g id="{gid}">')
    end = svg.find("<g id=", start + 1)
    return [(float(x), float(y)) for x, y in
            re.findall(r'<use [^>]*x="([-\d.]+)" y="([-\d.]+)"', svg[start:end if end > 0 else None])]


def assert_affine(values: list[float], positions: list[float], tol: float = 0.02):
    """positions = a + b * values for one (a, b) with b != 0: the points are the values."""
    assert len(values) == len(positions) >= 2
    (v0, p0), (v1, p1) = min(zip(values, positions)), max(zip(values, positions))
    assert v1 > v0
    b = (p1 - p0) / (v1 - v0)
    assert abs(b) > 0
    for v, p in zip(values, positions):
        assert abs(p0 + b * (v - v0) - p) < tol, (values, positions)
