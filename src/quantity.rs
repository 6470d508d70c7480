//! Exact Kubernetes resource quantities.
//!
//! This module owns parsing, comparing and canonically printing Kubernetes
//! quantities such as `4Gi`, `1.5G`, `500m` and `1e3` (the equivalent of
//! apimachinery's `resource.Quantity`). It is pure (no I/O) and depends on
//! nothing else in the crate.
//!
//! Values are kept exactly as an `i128` number of milli-units. Anything finer
//! than `1m` is refused instead of being rounded the way Kubernetes does, and
//! magnitudes above `u64::MAX` units (`16Ei - 1`) are refused as too large, so
//! that every `u64` byte count is representable.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// How a quantity prefers to be printed (mirrors Kubernetes' `Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Powers of two: `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`.
    BinarySI,
    /// Powers of ten with SI suffixes: `m`, `k`, `M`, `G`, `T`, `P`, `E`.
    DecimalSI,
    /// Powers of ten written as an exponent: `e3`, `e-3`, …
    DecimalExponent,
}

/// An exact Kubernetes resource quantity.
///
/// Equality, ordering and hashing look at the value only, never at the
/// format: `1024Mi == 1Gi`.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    millis: i128,
    format: Format,
}

/// Why a string is not a valid quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The input is the empty string.
    #[error("invalid quantity ``: empty")]
    Empty,
    /// The input contains whitespace somewhere.
    #[error("invalid quantity `{input}`: whitespace is not allowed")]
    Whitespace { input: String },
    /// There are no digits before the suffix (`Gi`, `-`, `.`).
    #[error("invalid quantity `{input}`: missing number")]
    MissingNumber { input: String },
    /// More than one leading sign (`--1`).
    #[error("invalid quantity `{input}`: more than one sign")]
    MultipleSigns { input: String },
    /// More than one decimal point (`1.2.3`).
    #[error("invalid quantity `{input}`: more than one decimal point")]
    MultipleDecimalPoints { input: String },
    /// The suffix is not one Kubernetes knows (`GB`, `gi`, `Ki5`).
    #[error("invalid quantity `{input}`: unknown suffix `{suffix}` (use Gi, G, Mi, M, Ki, k, …)")]
    UnknownSuffix { input: String, suffix: String },
    /// An `e`/`E` exponent suffix without a valid signed integer (`1e`, `1e5x`).
    #[error(
        "invalid quantity `{input}`: invalid exponent `{exponent}` (expected e.g. `e3` or `e-3`)"
    )]
    InvalidExponent { input: String, exponent: String },
    /// The value is not a whole number of milli-units (`1n`, `0.0001`).
    #[error("quantity `{input}` is too precise (smallest unit is 1m)")]
    TooPrecise { input: String },
    /// The magnitude exceeds `u64::MAX` units.
    #[error("quantity `{input}` is too large")]
    TooLarge { input: String },
}

/// Largest accepted magnitude, in units.
const MAX_UNITS: u128 = u64::MAX as u128;
/// Largest accepted magnitude, in milli-units.
const MAX_MILLIS: u128 = MAX_UNITS * 1000;
/// Exponents are clamped to this magnitude while parsing; any non-zero value
/// with a larger exponent is necessarily too large or too precise.
const EXPONENT_CLAMP: i64 = 1_000_000_000_000;

const DECIMAL_SUFFIXES: [(&str, i64); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

const BINARY_SUFFIXES: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];

/// The magnitude problem found while computing an exact value.
enum Inexact {
    TooPrecise,
    TooLarge,
}

impl Quantity {
    /// Parses a Kubernetes quantity string exactly.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let input = || s.to_owned();
        if s.is_empty() {
            return Err(QuantityError::Empty);
        }
        if s.chars().any(char::is_whitespace) {
            return Err(QuantityError::Whitespace { input: input() });
        }

        let bytes = s.as_bytes();
        let mut pos = 0;
        let negative = match bytes.first() {
            Some(b'-') => {
                pos = 1;
                true
            }
            Some(b'+') => {
                pos = 1;
                false
            }
            _ => false,
        };
        if matches!(bytes.get(pos), Some(b'+' | b'-')) {
            return Err(QuantityError::MultipleSigns { input: input() });
        }

        let int_start = pos;
        while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        let int_digits = &s[int_start..pos];
        let mut frac_digits = "";
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            let frac_start = pos;
            while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
                pos += 1;
            }
            frac_digits = &s[frac_start..pos];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(QuantityError::MissingNumber { input: input() });
        }

        let suffix = &s[pos..];
        if suffix.starts_with('.') {
            return Err(QuantityError::MultipleDecimalPoints { input: input() });
        }
        let (format, suffix_exp10, pow2) = parse_suffix(s, suffix)?;

        let frac_len = i64::try_from(frac_digits.len()).unwrap_or(i64::MAX);
        let exp10 = suffix_exp10.saturating_add(3).saturating_sub(frac_len);
        let mut digits = String::with_capacity(int_digits.len() + frac_digits.len());
        digits.push_str(int_digits);
        digits.push_str(frac_digits);

        let magnitude = exact_millis(&digits, exp10, pow2).map_err(|e| match e {
            Inexact::TooPrecise => QuantityError::TooPrecise { input: input() },
            Inexact::TooLarge => QuantityError::TooLarge { input: input() },
        })?;
        // `magnitude <= MAX_MILLIS`, which fits comfortably in an i128.
        let magnitude =
            i128::try_from(magnitude).map_err(|_| QuantityError::TooLarge { input: input() })?;
        let millis = if negative { -magnitude } else { magnitude };
        Ok(Quantity { millis, format })
    }

    /// A whole number of bytes, printed in binary (`Ki`, `Mi`, `Gi`, …) form.
    pub fn from_bytes(bytes: u64) -> Quantity {
        Quantity {
            millis: i128::from(bytes) * 1000,
            format: Format::BinarySI,
        }
    }

    /// A value given in milli-units. The value is not range-checked: values
    /// beyond `u64::MAX` units print fine but will not parse back.
    pub fn from_millis(millis: i128, format: Format) -> Quantity {
        Quantity { millis, format }
    }

    /// The exact value in milli-units.
    pub fn millis(&self) -> i128 {
        self.millis
    }

    /// The preferred print format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whole, non-negative value (e.g. bytes); None when fractional or negative.
    pub fn as_u64(&self) -> Option<u64> {
        if self.millis % 1000 != 0 {
            return None;
        }
        u64::try_from(self.millis / 1000).ok()
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.millis == 0
    }

    /// true when the value is a whole multiple of `unit` (e.g. 2Mi alignment); false for fractional values
    ///
    /// A `unit` of zero is never divided by: the answer is then `false`.
    pub fn is_multiple_of(&self, unit: u64) -> bool {
        if unit == 0 || self.millis % 1000 != 0 {
            return false;
        }
        (self.millis / 1000) % i128::from(unit) == 0
    }

    /// The canonical text, following Kubernetes' `Quantity.String()`.
    fn canonical(&self) -> String {
        if self.millis == 0 {
            return "0".to_owned();
        }
        let sign = if self.millis < 0 { "-" } else { "" };
        let magnitude = self.millis.unsigned_abs();

        if self.format == Format::BinarySI && magnitude.is_multiple_of(1000) {
            let units = magnitude / 1000;
            for &(suffix, shift) in BINARY_SUFFIXES.iter().rev() {
                let base = 1u128 << shift;
                if units.is_multiple_of(base) {
                    return format!("{sign}{}{suffix}", units / base);
                }
            }
        }

        // Decimal forms: the largest power of 1000 (in milli-units) that
        // divides the value; DecimalSI stops at `E` (10^18).
        let exponent_form = self.format == Format::DecimalExponent;
        let mut mantissa = magnitude;
        let mut unit_exp: i64 = -3;
        while mantissa.is_multiple_of(1000) && (exponent_form || unit_exp < 18) {
            mantissa /= 1000;
            unit_exp += 3;
        }
        let suffix = if exponent_form {
            if unit_exp == 0 {
                String::new()
            } else {
                format!("e{unit_exp}")
            }
        } else {
            DECIMAL_SUFFIXES
                .iter()
                .find(|(_, e)| *e == unit_exp)
                .map(|(s, _)| (*s).to_owned())
                .unwrap_or_default()
        };
        format!("{sign}{mantissa}{suffix}")
    }
}

/// Splits a suffix into (format, power of ten, power of two).
fn parse_suffix(input: &str, suffix: &str) -> Result<(Format, i64, u32), QuantityError> {
    if let Some(&(_, exp)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        return Ok((Format::DecimalSI, exp, 0));
    }
    if let Some(&(_, shift)) = BINARY_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        return Ok((Format::BinarySI, 0, shift));
    }
    if let Some(rest) = suffix.strip_prefix(['e', 'E']) {
        let looks_like_exponent = rest.is_empty()
            || rest.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-');
        if looks_like_exponent {
            return parse_exponent(rest)
                .map(|exp| (Format::DecimalExponent, exp, 0))
                .ok_or_else(|| QuantityError::InvalidExponent {
                    input: input.to_owned(),
                    exponent: suffix.to_owned(),
                });
        }
    }
    Err(QuantityError::UnknownSuffix {
        input: input.to_owned(),
        suffix: suffix.to_owned(),
    })
}

/// Parses the signed integer after `e`/`E`, clamped to `±EXPONENT_CLAMP`.
fn parse_exponent(rest: &str) -> Option<i64> {
    let (negative, digits) = match rest.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, rest.strip_prefix('+').unwrap_or(rest)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = digits.bytes().fold(0i64, |acc, b| {
        acc.saturating_mul(10)
            .saturating_add(i64::from(b - b'0'))
            .min(EXPONENT_CLAMP)
    });
    Some(if negative { -value } else { value })
}

/// Computes `digits * 10^exp10 * 2^pow2` exactly, as a non-negative integer
/// no larger than `MAX_MILLIS`.
fn exact_millis(digits: &str, mut exp10: i64, pow2: u32) -> Result<u128, Inexact> {
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Ok(0);
    }
    let trimmed = significant.trim_end_matches('0');
    let trailing_zeros = i64::try_from(significant.len() - trimmed.len()).unwrap_or(i64::MAX);
    exp10 = exp10.saturating_add(trailing_zeros);
    let mut digits: Vec<u8> = trimmed.bytes().map(|b| b - b'0').collect();
    let mut pow2 = pow2;

    // Cancel every negative power of ten against factors of 5 in the digits
    // and factors of 2 in either the binary suffix or the digits. Each step
    // shrinks the digits, so this stops quickly when the value is inexact.
    while exp10 < 0 {
        if !divide_exactly(&mut digits, 5) {
            return Err(Inexact::TooPrecise);
        }
        if pow2 > 0 {
            pow2 -= 1;
        } else if !divide_exactly(&mut digits, 2) {
            return Err(Inexact::TooPrecise);
        }
        exp10 += 1;
    }

    let mut value: u128 = 0;
    for &d in &digits {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(d)))
            .ok_or(Inexact::TooLarge)?;
    }
    let scale = u32::try_from(exp10)
        .ok()
        .and_then(|e| 10u128.checked_pow(e))
        .ok_or(Inexact::TooLarge)?;
    value = value
        .checked_mul(scale)
        .and_then(|v| v.checked_mul(1u128 << pow2))
        .ok_or(Inexact::TooLarge)?;
    if value > MAX_MILLIS {
        return Err(Inexact::TooLarge);
    }
    Ok(value)
}

/// Divides a big-endian decimal digit vector by `divisor` in place when the
/// division is exact; leaves it untouched and returns false otherwise.
fn divide_exactly(digits: &mut Vec<u8>, divisor: u8) -> bool {
    let mut quotient = Vec::with_capacity(digits.len());
    let mut remainder: u8 = 0;
    for &d in digits.iter() {
        let current = u16::from(remainder) * 10 + u16::from(d);
        let q = current / u16::from(divisor);
        remainder = (current % u16::from(divisor)) as u8;
        if !(quotient.is_empty() && q == 0) {
            quotient.push(q as u8);
        }
    }
    if remainder != 0 {
        return false;
    }
    *digits = quotient;
    true
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.canonical())
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.millis == other.millis
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.millis.cmp(&other.millis)
    }
}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.millis.hash(state);
    }
}

impl serde::Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(QuantityVisitor)
    }
}

struct QuantityVisitor;

impl serde::de::Visitor<'_> for QuantityVisitor {
    type Value = Quantity;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes quantity such as \"4Gi\"")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
        Quantity::parse(v).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
        Ok(Quantity::from_millis(
            i128::from(v) * 1000,
            Format::DecimalSI,
        ))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
        Ok(Quantity::from_millis(
            i128::from(v) * 1000,
            Format::DecimalSI,
        ))
    }

    /// YAML reads `0.5` and `1e9` as floats; Kubernetes accepts them as quantities, so parse
    /// their shortest decimal form (exactly what the user wrote for such values).
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
        if !v.is_finite() {
            return Err(E::invalid_value(serde::de::Unexpected::Float(v), &self));
        }
        Quantity::parse(&format!("{v}")).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn parse_then_display_is_canonical() {
        let cases: &[(&str, &str, i128)] = &[
            // Every binary suffix.
            ("1Ki", "1Ki", 1_024_000),
            ("1Mi", "1Mi", 1_048_576_000),
            ("4Gi", "4Gi", 4 * (1 << 30) * 1000),
            ("1Ti", "1Ti", (1 << 40) * 1000),
            ("1Pi", "1Pi", (1 << 50) * 1000),
            ("1Ei", "1Ei", (1 << 60) * 1000),
            // Every decimal suffix.
            ("1000000n", "1m", 1),
            ("1000u", "1m", 1),
            ("500m", "500m", 500),
            ("7", "7", 7000),
            ("1k", "1k", 1_000_000),
            ("1M", "1M", 1_000_000_000),
            ("1G", "1G", 1_000_000_000_000),
            ("1T", "1T", 1_000_000_000_000_000),
            ("1P", "1P", 1_000_000_000_000_000_000),
            ("1E", "1E", 1_000_000_000_000_000_000_000),
            // Canonicalisation.
            ("1024Mi", "1Gi", (1 << 30) * 1000),
            ("1536Mi", "1536Mi", 1536 * (1 << 20) * 1000),
            ("1.5Gi", "1536Mi", 1536 * (1 << 20) * 1000),
            ("1.5Ki", "1536", 1_536_000),
            ("0.5Ki", "512", 512_000),
            ("1073741824", "1073741824", 1_073_741_824_000),
            ("1000", "1k", 1_000_000),
            ("1500", "1500", 1_500_000),
            ("1.5k", "1500", 1_500_000),
            ("12000000", "12M", 12_000_000_000),
            ("1000k", "1M", 1_000_000_000),
            ("18E", "18E", 18_000_000_000_000_000_000_000),
            ("0.5", "500m", 500),
            ("0.001", "1m", 1),
            ("1.5G", "1500M", 1_500_000_000_000),
            // Fractions and their edge spellings.
            (".5", "500m", 500),
            ("5.", "5", 5000),
            ("0.0009765625Ki", "1", 1000),
            ("1.000000000000000000000000", "1", 1000),
            ("00000000000000000000000001k", "1k", 1_000_000),
            // Signs.
            ("-1Gi", "-1Gi", -(1 << 30) * 1000),
            ("+1Gi", "1Gi", (1 << 30) * 1000),
            ("-500m", "-500m", -500),
            ("-1000", "-1k", -1_000_000),
            ("-0", "0", 0),
            // Zero in every format.
            ("0", "0", 0),
            ("0Gi", "0", 0),
            ("0e3", "0", 0),
            ("0.000n", "0", 0),
            ("0e-999999999999999999999999", "0", 0),
            // Exponent forms.
            ("1e3", "1e3", 1_000_000),
            ("1E3", "1e3", 1_000_000),
            ("1e+3", "1e3", 1_000_000),
            ("1500e0", "1500", 1_500_000),
            ("1e4", "10e3", 10_000_000),
            ("5e-1", "500e-3", 500),
            ("1e-3", "1e-3", 1),
            ("1.5e6", "1500e3", 1_500_000_000),
            ("-2e9", "-2e9", -2_000_000_000_000),
            ("12e0", "12", 12_000),
            // Limits.
            (
                "18446744073709551615",
                "18446744073709551615",
                18_446_744_073_709_551_615_000,
            ),
            (
                "-18446744073709551615",
                "-18446744073709551615",
                -18_446_744_073_709_551_615_000,
            ),
            ("15Ei", "15Ei", 15 * (1 << 60) * 1000),
        ];
        assert!(cases.len() >= 30);
        for &(input, expected, millis) in cases {
            let parsed = q(input);
            assert_eq!(parsed.to_string(), expected, "display of {input:?}");
            assert_eq!(parsed.millis(), millis, "millis of {input:?}");
        }
    }

    #[test]
    fn parse_records_the_format() {
        assert_eq!(q("1Gi").format(), Format::BinarySI);
        assert_eq!(q("1G").format(), Format::DecimalSI);
        assert_eq!(q("1").format(), Format::DecimalSI);
        assert_eq!(q("1E").format(), Format::DecimalSI);
        assert_eq!(q("1e3").format(), Format::DecimalExponent);
        assert_eq!(q("1E3").format(), Format::DecimalExponent);
        assert_eq!(Quantity::from_bytes(1).format(), Format::BinarySI);
    }

    #[test]
    fn invalid_inputs_have_precise_messages() {
        let cases: &[(&str, &str)] = &[
            (
                "4GB",
                "invalid quantity `4GB`: unknown suffix `GB` (use Gi, G, Mi, M, Ki, k, …)",
            ),
            (
                "4gi",
                "invalid quantity `4gi`: unknown suffix `gi` (use Gi, G, Mi, M, Ki, k, …)",
            ),
            (
                "4K",
                "invalid quantity `4K`: unknown suffix `K` (use Gi, G, Mi, M, Ki, k, …)",
            ),
            (
                "1Ki5",
                "invalid quantity `1Ki5`: unknown suffix `Ki5` (use Gi, G, Mi, M, Ki, k, …)",
            ),
            (
                "1EB",
                "invalid quantity `1EB`: unknown suffix `EB` (use Gi, G, Mi, M, Ki, k, …)",
            ),
            (
                "1-",
                "invalid quantity `1-`: unknown suffix `-` (use Gi, G, Mi, M, Ki, k, …)",
            ),
            (
                "1.2.3",
                "invalid quantity `1.2.3`: more than one decimal point",
            ),
            (" 4Gi", "invalid quantity ` 4Gi`: whitespace is not allowed"),
            ("4 Gi", "invalid quantity `4 Gi`: whitespace is not allowed"),
            (
                "4Gi\n",
                "invalid quantity `4Gi\n`: whitespace is not allowed",
            ),
            ("", "invalid quantity ``: empty"),
            ("Gi", "invalid quantity `Gi`: missing number"),
            (".", "invalid quantity `.`: missing number"),
            ("-", "invalid quantity `-`: missing number"),
            ("--1", "invalid quantity `--1`: more than one sign"),
            ("+-1", "invalid quantity `+-1`: more than one sign"),
            ("1n", "quantity `1n` is too precise (smallest unit is 1m)"),
            ("1u", "quantity `1u` is too precise (smallest unit is 1m)"),
            (
                "0.0001",
                "quantity `0.0001` is too precise (smallest unit is 1m)",
            ),
            (
                "0.5m",
                "quantity `0.5m` is too precise (smallest unit is 1m)",
            ),
            (
                "1e-4",
                "quantity `1e-4` is too precise (smallest unit is 1m)",
            ),
            (
                "1e-99999999999999999999",
                "quantity `1e-99999999999999999999` is too precise (smallest unit is 1m)",
            ),
            (
                "1e",
                "invalid quantity `1e`: invalid exponent `e` (expected e.g. `e3` or `e-3`)",
            ),
            (
                "1e+",
                "invalid quantity `1e+`: invalid exponent `e+` (expected e.g. `e3` or `e-3`)",
            ),
            (
                "1e5x",
                "invalid quantity `1e5x`: invalid exponent `e5x` (expected e.g. `e3` or `e-3`)",
            ),
            (
                "1e1.5",
                "invalid quantity `1e1.5`: invalid exponent `e1.5` (expected e.g. `e3` or `e-3`)",
            ),
            (
                "18446744073709551616",
                "quantity `18446744073709551616` is too large",
            ),
            ("16Ei", "quantity `16Ei` is too large"),
            ("-16Ei", "quantity `-16Ei` is too large"),
            ("20E", "quantity `20E` is too large"),
            ("1e20", "quantity `1e20` is too large"),
            (
                "1e99999999999999999999",
                "quantity `1e99999999999999999999` is too large",
            ),
            (
                "99999999999999999999999999999999999999999999999999",
                "quantity `99999999999999999999999999999999999999999999999999` is too large",
            ),
        ];
        for &(input, message) in cases {
            match Quantity::parse(input) {
                Ok(v) => panic!("{input:?} should be rejected, got {v}"),
                Err(e) => assert_eq!(e.to_string(), message, "error for {input:?}"),
            }
        }
        assert!(matches!(
            "4GB".parse::<Quantity>(),
            Err(QuantityError::UnknownSuffix { .. })
        ));
    }

    #[test]
    fn comparisons_are_by_value() {
        assert!(q("1Gi") > q("1000Mi"));
        assert!(q("1G") < q("1Gi"));
        assert_eq!(q("1024Mi"), q("1Gi"));
        assert_eq!(q("1000"), q("1k"));
        assert_eq!(q("1e3"), q("1k"));
        assert!(q("-1Gi") < q("0"));
        assert!(q("500m") < q("1"));
        assert_eq!(q("1024Mi").cmp(&q("1Gi")), Ordering::Equal);

        let mut set = std::collections::HashSet::new();
        set.insert(q("1Gi"));
        assert!(set.contains(&q("1024Mi")));
        assert!(set.contains(&Quantity::from_bytes(1 << 30)));
        assert!(!set.contains(&q("1G")));
    }

    #[test]
    fn whole_values_and_alignment() {
        const TWO_MI: u64 = 2 * 1024 * 1024;
        assert_eq!(q("1Gi").as_u64(), Some(1 << 30));
        assert_eq!(q("0").as_u64(), Some(0));
        assert_eq!(q("1.5").as_u64(), None);
        assert_eq!(q("-1").as_u64(), None);
        assert_eq!(q("18446744073709551615").as_u64(), Some(u64::MAX));
        assert!(q("1Gi").is_multiple_of(TWO_MI));
        assert!(!q("1025Mi").is_multiple_of(TWO_MI));
        assert!(q("1026Mi").is_multiple_of(TWO_MI));
        assert!(!q("1.5").is_multiple_of(1));
        assert!(q("0").is_multiple_of(TWO_MI));
        assert!(q("-4Mi").is_multiple_of(TWO_MI));
        assert!(!q("4Mi").is_multiple_of(0));
        assert!(q("0").is_zero());
        assert!(q("-0.000").is_zero());
        assert!(!q("1m").is_zero());
    }

    #[test]
    fn constructors() {
        assert_eq!(Quantity::from_bytes(1 << 30).to_string(), "1Gi");
        assert_eq!(Quantity::from_bytes(1536).to_string(), "1536");
        assert_eq!(Quantity::from_bytes(1000).to_string(), "1k");
        assert_eq!(Quantity::from_bytes(0).to_string(), "0");
        assert_eq!(Quantity::from_bytes(u64::MAX).as_u64(), Some(u64::MAX));
        let half = Quantity::from_millis(500, Format::BinarySI);
        assert_eq!(half.to_string(), "500m");
        assert_eq!(half.millis(), 500);
        assert_eq!(
            Quantity::from_millis(1_500, Format::DecimalExponent).to_string(),
            "1500e-3"
        );
        assert_eq!(
            Quantity::from_millis(i128::MIN, Format::DecimalSI).to_string(),
            format!("{}m", i128::MIN)
        );
        assert_eq!(
            Quantity::from_millis(10i128.pow(24), Format::DecimalSI).to_string(),
            "1000E"
        );
        assert_eq!(
            Quantity::from_millis(10i128.pow(24), Format::DecimalExponent).to_string(),
            "1e21"
        );
        assert_eq!(format!("{:>6}|", q("1Gi")), "   1Gi|");
    }

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// The error of a deserialization that must fail.
    fn rejection(json: &str) -> String {
        match serde_json::from_str::<Quantity>(json) {
            Ok(v) => panic!("{json} should be rejected, got {v}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn serde_round_trip() -> TestResult {
        let from_string: Quantity = serde_json::from_str("\"1024Mi\"")?;
        assert_eq!(from_string, q("1Gi"));
        assert_eq!(from_string.format(), Format::BinarySI);

        let from_int: Quantity = serde_json::from_str("2048")?;
        assert_eq!(from_int.millis(), 2_048_000);
        assert_eq!(from_int.format(), Format::DecimalSI);
        let negative: Quantity = serde_json::from_str("-3")?;
        assert_eq!(negative.millis(), -3000);

        assert_eq!(serde_json::to_string(&q("1024Mi"))?, "\"1Gi\"");
        assert_eq!(
            serde_json::to_value(vec![q("1.5"), q("1e3")])?,
            serde_json::json!(["1500m", "1e3"])
        );
        Ok(())
    }

    #[test]
    fn serde_rejections_explain_themselves() {
        assert_eq!(
            rejection("true"),
            "invalid type: boolean `true`, expected a Kubernetes quantity such as \"4Gi\" at line 1 column 4"
        );
        // floats are quantities, as in Kubernetes (`cpu: 0.5`, `size: 1e9`)
        assert_eq!(
            serde_json::from_str::<Quantity>("1.5").ok(),
            Some(q("1500m"))
        );
        assert_eq!(serde_json::from_str::<Quantity>("1e9").ok(), Some(q("1G")));
        assert!(rejection("[1]").starts_with("invalid type: sequence, expected a Kubernetes"));
        assert!(rejection("{}").starts_with("invalid type: map, expected a Kubernetes"));
        assert!(rejection("null").starts_with("invalid type: null, expected a Kubernetes"));
        assert_eq!(
            rejection("\"4GB\""),
            "invalid quantity `4GB`: unknown suffix `GB` (use Gi, G, Mi, M, Ki, k, …) at line 1 column 5"
        );
    }

    fn quantity_string() -> impl Strategy<Value = String> {
        let suffix = prop_oneof![
            prop::sample::select(vec![
                "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi",
                "Ei",
            ])
            .prop_map(str::to_owned),
            (-12i32..=21).prop_map(|e| format!("e{e}")),
        ];
        (
            prop::sample::select(vec!["", "+", "-"]),
            "[0-9]{0,8}",
            prop::option::of("[0-9]{0,6}"),
            suffix,
        )
            .prop_map(|(sign, int, frac, suffix)| match frac {
                Some(frac) => format!("{sign}{int}.{frac}{suffix}"),
                None => format!("{sign}{int}{suffix}"),
            })
    }

    fn any_format() -> impl Strategy<Value = Format> {
        prop::sample::select(vec![
            Format::BinarySI,
            Format::DecimalSI,
            Format::DecimalExponent,
        ])
    }

    proptest! {
        #[test]
        fn bytes_round_trip(bytes in any::<u64>()) {
            let shown = Quantity::from_bytes(bytes).to_string();
            let back = Quantity::parse(&shown).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back.as_u64(), Some(bytes));
        }

        #[test]
        fn display_round_trips_and_is_idempotent(s in quantity_string()) {
            if let Ok(parsed) = Quantity::parse(&s) {
                let shown = parsed.to_string();
                let back = Quantity::parse(&shown).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(back, parsed);
                prop_assert_eq!(back.to_string(), shown);
            }
        }

        #[test]
        fn millis_round_trip_in_every_format(
            millis in -(MAX_MILLIS as i128)..=(MAX_MILLIS as i128),
            format in any_format(),
        ) {
            let value = Quantity::from_millis(millis, format);
            let shown = value.to_string();
            let back = Quantity::parse(&shown).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back.millis(), millis);
            prop_assert_eq!(back.to_string(), shown);
        }

        #[test]
        fn never_panics(s in "\\PC{0,12}") {
            let _ = Quantity::parse(&s);
        }

        #[test]
        fn order_matches_millis(a in quantity_string(), b in quantity_string()) {
            if let (Ok(a), Ok(b)) = (Quantity::parse(&a), Quantity::parse(&b)) {
                prop_assert_eq!(a.cmp(&b), a.millis().cmp(&b.millis()));
                prop_assert_eq!(a == b, a.millis() == b.millis());
            }
        }
    }
}
