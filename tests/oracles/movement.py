#!/usr/bin/env python3
"""An independent implementation of docs/movement.md, written from that page alone.

It emulates IEEE-754 single precision by rounding every operation's exact double result to
the nearest f32 (double rounding is harmless for +, -, *, / and sqrt), and checks the
page's sine/cosine values and every example of its table. CI runs it (.ci/run); it needs
nothing but Python 3.
"""
import math
import struct
import sys


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def from_bits(b: int) -> float:
    return struct.unpack("<f", struct.pack("<I", b))[0]


def bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def add(a, b): return f32(a + b)
def sub(a, b): return f32(a - b)
def mul(a, b): return f32(a * b)
def div(a, b): return f32(a / b)


STEP = from_bits(0x38C90FDB)
S3, S5, S7, S9 = (from_bits(b) for b in (0xBE2AAAAB, 0x3C088889, 0xB9500D01, 0x3638EF1D))
C2, C4, C6, C8, C10 = (
    from_bits(b) for b in (0xBF000000, 0x3D2AAAAB, 0xBAB60B61, 0x37D00D01, 0xB493F27E)
)
RADIUS, STAND, CROUCH = f32(0.375), f32(1.75), f32(1.25)
WALK, CROUCH_SPEED, SIDE_EPS, PITCH_LIMIT = f32(5.5), f32(2.5), f32(1 / 1024), 16202


def sin_cos(a: int):
    a &= 0xFFFF
    octant, r = a >> 13, a & 0x1FFF
    k = 8192 - r if octant & 1 else r
    x = mul(float(k), STEP)
    x2 = mul(x, x)
    s = mul(x, add(1.0, mul(x2, add(S3, mul(x2, add(S5, mul(x2, add(S7, mul(x2, S9)))))))))
    c = add(1.0, mul(x2, add(C2, mul(x2, add(C4, mul(x2, add(C6, mul(x2, add(C8, mul(x2, C10))))))))))
    return [(s, c), (c, s), (c, -s), (s, -c), (-s, -c), (-c, -s), (-c, s), (-s, c)][octant]


def snap(v: float) -> float:
    t = mul(f32(v), 256.0)
    return div(float(math.floor(abs(t) + 0.5) * (1 if t >= 0 else -1)), 256.0)


def round_half_away(t: float) -> float:
    return float(math.floor(abs(t) + 0.5) * (1 if t >= 0 else -1))


def box(p, height):
    return ([sub(p[0], RADIUS), p[1], sub(p[2], RADIUS)],
            [add(p[0], RADIUS), add(p[1], height), add(p[2], RADIUS)])


def overlaps(a, b):
    return all(a[0][i] < b[1][i] and b[0][i] < a[1][i] for i in range(3))


def slide(walls, bounds, pos, height, axis, d):
    if d == 0.0:
        return pos
    other = 2 - axis
    lo_h, hi_h = box(pos, height)
    target = add(pos[axis], d)
    blocked = False
    for bmin, bmax in walls:
        beside = (lo_h[1] < bmax[1] and bmin[1] < hi_h[1]
                  and lo_h[other] < bmax[other] and bmin[other] < hi_h[other])
        if not beside:
            continue
        if d > 0 and hi_h[axis] <= add(bmin[axis], SIDE_EPS) and add(target, RADIUS) > bmin[axis]:
            target, blocked = sub(bmin[axis], RADIUS), True
        elif d < 0 and lo_h[axis] >= sub(bmax[axis], SIDE_EPS) and sub(target, RADIUS) < bmax[axis]:
            target, blocked = add(bmax[axis], RADIUS), True
    lo, hi = add(bounds[0][axis], RADIUS), sub(bounds[1][axis], RADIUS)
    if target > hi:
        target, blocked = hi, True
    elif target < lo:
        target, blocked = lo, True
    t = mul(target, 256.0)
    if not blocked:
        g = round_half_away(t)
    elif d > 0:
        g = float(math.floor(t))
    else:
        g = float(math.ceil(t))
    out = list(pos)
    out[axis] = div(g, 256.0)
    return out


def step(state, inp, walls, bounds, hz):
    x, z, flags = state
    if flags & 2:
        return (x, z, 0, 0, flags)
    move_fwd, move_right, yaw, pitch, buttons = inp
    pos = [div(float(x), 256.0), 0.0, div(float(z), 256.0)]
    crouching = flags & 1
    if buttons & 1:
        crouch = True
    elif crouching and any(overlaps(box(pos, STAND), w) for w in walls):
        crouch = True
    else:
        crouch = False
    height, speed = (CROUCH, CROUCH_SPEED) if crouch else (STAND, WALK)
    s, c = sin_cos(yaw)
    f = (c, s)
    g = (-s, c)
    af = min(max(div(float(move_fwd), 127.0), -1.0), 1.0)
    ar = min(max(div(float(move_right), 127.0), -1.0), 1.0)
    wx = add(mul(f[0], af), mul(g[0], ar))
    wz = add(mul(f[1], af), mul(g[1], ar))
    length = f32(math.sqrt(add(add(mul(wx, wx), 0.0), mul(wz, wz))))
    if length > 1.0:
        wx, wz = div(wx, length), div(wz, length)
    k = mul(speed, div(1.0, float(hz)))
    dx, dz = mul(wx, k), mul(wz, k)
    pos = slide(walls, bounds, pos, height, 0, dx)
    pos = slide(walls, bounds, pos, height, 2, dz)
    p = max(-PITCH_LIMIT, min(PITCH_LIMIT, pitch))
    return (int(mul(pos[0], 256.0)), int(mul(pos[2], 256.0)), yaw, p, 1 if crouch else 0)


def main() -> int:
    failures = 0
    for angle, want in [(5000, (0x3EEC24F3, 0x3F63252F)), (8192, (0x3F3504F2, 0x3F3504F3)),
                        (20000, (0x3F70C502, 0xBEADF73C)), (40000, (0xBF239DA9, 0xBF44E3F5))]:
        s, c = sin_cos(angle)
        if (bits(s), bits(c)) != want:
            print(f"sin_cos({angle}) = {bits(s):#x}, {bits(c):#x}; the page says {want}")
            failures += 1
    v = lambda x, y, zz: [snap(x), snap(y), snap(zz)]
    bounds = (v(-10, 0, -10), v(10, 5, 10))
    walls = [(v(2, 0, -1), v(3, 2, 1)), (v(-3, 1.5, 4), v(3, 2, 6))]
    examples = [
        ((0, 0, 0), (127, 0, 5000, 0, 0), 64, (20, 10, 5000, 0, 0)),
        ((0, 0, 0), (127, 127, 12345, -300, 0), 64, (-9, 20, 12345, -300, 0)),
        ((0, 0, 0), (0, 127, 0, 0, 0), 64, (0, 22, 0, 0, 0)),
        ((0, 0, 0), (127, 0, 16384, 0, 1), 64, (0, 10, 16384, 0, 1)),
        ((100, -200, 0), (-128, 0, 40000, 0, 0), 64, (117, -186, 40000, 0, 0)),
        ((413, 0, 0), (127, 0, 0, 0, 0), 64, (416, 0, 0, 0, 0)),
        ((867, 0, 0), (127, 0, 32768, 0, 0), 64, (864, 0, 32768, 0, 0)),
        ((413, 0, 0), (127, 0, 5461, 0, 0), 64, (416, 11, 5461, 0, 0)),
        ((2458, 0, 0), (127, 0, 0, 0, 0), 64, (2464, 0, 0, 0, 0)),
        ((0, 1280, 1), (0, 0, 0, 0, 0), 64, (0, 1280, 0, 0, 1)),
        ((0, 0, 0), (90, -45, 61000, 0, 0), 128, (5, -7, 61000, 0, 0)),
        ((0, 0, 0), (0, 0, 7, 32767, 0), 64, (0, 0, 7, 16202, 0)),
        ((5, 5, 2), (127, 0, 0, 0, 0), 64, (5, 5, 0, 0, 2)),
    ]
    for start, inp, hz, want in examples:
        got = step(start, inp, walls, bounds, hz)
        if got != want:
            print(f"step{start, inp, hz} = {got}; the page says {want}")
            failures += 1
    if failures:
        print(f"{failures} of {4 + len(examples)} checks of docs/movement.md failed")
        return 1
    print(f"docs/movement.md: all {4 + len(examples)} checks reproduced from the page alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
