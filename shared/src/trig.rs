//! Sine and cosine of an angle in steps (65536 a turn), bit for bit the same on every
//! platform and in every language.
//!
//! A platform's `sinf`/`cosf` may differ in the last bit from another's, and a client that
//! predicts its own movement must get the server's answer exactly. So the angle is reduced to
//! an eighth of a turn with integers (exact), and the sine and cosine there are polynomials
//! evaluated with IEEE-754 single-precision additions and multiplications only, in a fixed
//! order, never fused. `docs/movement.md` gives the constants as bit patterns;
//! `tests::pinned_values` pins the results.

/// One angle step in radians: pi / 32768.
pub const STEP: f32 = f32::from_bits(0x38c9_0fdb);
// Taylor coefficients of sin (x, x^3 .. x^9) and cos (x^2 .. x^10), rounded to f32.
const S3: f32 = f32::from_bits(0xbe2a_aaab);
const S5: f32 = f32::from_bits(0x3c08_8889);
const S7: f32 = f32::from_bits(0xb950_0d01);
const S9: f32 = f32::from_bits(0x3638_ef1d);
const C2: f32 = f32::from_bits(0xbf00_0000);
const C4: f32 = f32::from_bits(0x3d2a_aaab);
const C6: f32 = f32::from_bits(0xbab6_0b61);
const C8: f32 = f32::from_bits(0x37d0_0d01);
const C10: f32 = f32::from_bits(0xb493_f27e);

/// `(sin, cos)` of `angle` steps (65536 a turn; a negative angle's two's complement wraps).
pub fn sin_cos(angle: u16) -> (f32, f32) {
    let octant = angle >> 13;
    let r = angle & 0x1fff;
    // In odd octants measure from the octant's end, so that x stays within [0, pi/4].
    let k = if octant & 1 == 1 { 8192 - r } else { r };
    let x = f32::from(k) * STEP;
    let x2 = x * x;
    let s = x * (1.0 + x2 * (S3 + x2 * (S5 + x2 * (S7 + x2 * S9))));
    let c = 1.0 + x2 * (C2 + x2 * (C4 + x2 * (C6 + x2 * (C8 + x2 * C10))));
    match octant {
        0 => (s, c),
        1 => (c, s),
        2 => (c, -s),
        3 => (s, -c),
        4 => (-s, -c),
        5 => (-c, -s),
        6 => (-c, s),
        _ => (-s, c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_the_true_values_everywhere() {
        let mut worst: f64 = 0.0;
        for a in 0..=u16::MAX {
            let (s, c) = sin_cos(a);
            let t = f64::from(a) * std::f64::consts::TAU / 65_536.0;
            worst = worst
                .max((f64::from(s) - t.sin()).abs())
                .max((f64::from(c) - t.cos()).abs());
        }
        assert!(worst < 2e-7, "worst error {worst}");
        assert_eq!(sin_cos(0), (0.0, 1.0));
        assert_eq!(sin_cos(16_384), (1.0, 0.0));
        assert_eq!(sin_cos(32_768), (0.0, -1.0));
        assert_eq!(sin_cos(49_152), (-1.0, 0.0));
    }

    /// docs/movement.md lists these; a client in another language checks itself against them.
    #[test]
    fn pinned_values() {
        let bits = |a: u16| {
            let (s, c) = sin_cos(a);
            (s.to_bits(), c.to_bits())
        };
        assert_eq!(bits(1), (0x38c9_0fdb, 0x3f80_0000));
        assert_eq!(bits(5_000), (0x3eec_24f3, 0x3f63_252f));
        assert_eq!(bits(8_192), (0x3f35_04f2, 0x3f35_04f3));
        assert_eq!(bits(20_000), (0x3f70_c502, 0xbead_f73c));
        assert_eq!(bits(40_000), (0xbf23_9da9, 0xbf44_e3f5));
        assert_eq!(bits(65_535), (0xb8c9_0fdb, 0x3f80_0000));
    }
}
