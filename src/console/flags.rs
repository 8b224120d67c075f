//! Flag values shared by every command: the output format and value parsers that say why a
//! number is refused.

use clap::ValueEnum;

/// How client commands print their answer on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// The response message as JSON with the proto field names and enum value names.
    Json,
}

/// Value parser of a flag that takes a whole number: says why a value is refused ("must not
/// be negative") where the default parser says "invalid digit found in string". Numeric
/// arguments also set `allow_negative_numbers`, so that clap hands `-1` to this parser
/// instead of reading it as an unknown flag.
pub fn unsigned<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr<Err = std::num::ParseIntError>,
{
    use std::num::IntErrorKind;
    text.parse::<T>().map_err(|e| match e.kind() {
        IntErrorKind::InvalidDigit
            if text
                .strip_prefix('-')
                .is_some_and(|n| n.parse::<u128>().is_ok()) =>
        {
            "must not be negative".to_owned()
        }
        IntErrorKind::PosOverflow => "is too large".to_owned(),
        IntErrorKind::Empty => "is empty; expected a whole number".to_owned(),
        _ => "is not a whole number".to_owned(),
    })
}

/// Value parser of a flag that takes a non-negative finite number (see [`unsigned`]).
pub fn non_negative_f64(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if !x.is_finite() => Err("is not a finite number".to_owned()),
        Ok(x) if x < 0.0 => Err("must not be negative".to_owned()),
        Ok(x) => Ok(x),
        Err(_) => Err("is not a number".to_owned()),
    }
}
