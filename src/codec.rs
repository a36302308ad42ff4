//! Serde helpers for large float arrays in staged-run files: base64 of the little-endian bytes,
//! exact (no decimal round trip) and a third of the size of JSON numbers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

fn bytes<T: Copy, const N: usize>(values: &[T], to_le: impl Fn(T) -> [u8; N]) -> String {
    let raw: Vec<u8> = values.iter().flat_map(|&v| to_le(v)).collect();
    STANDARD.encode(raw)
}

fn values<T, const N: usize, E: serde::de::Error>(text: &str, from_le: impl Fn([u8; N]) -> T) -> Result<Vec<T>, E> {
    let raw = STANDARD.decode(text).map_err(E::custom)?;
    if raw.len() % N != 0 {
        return Err(E::custom("array bytes are not a whole number of values"));
    }
    Ok(raw
        .chunks_exact(N)
        .map(|c| from_le(c.try_into().expect("chunk of N")))
        .collect())
}

pub mod f32s {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::bytes(v, f32::to_le_bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        super::values(&String::deserialize(d)?, f32::from_le_bytes)
    }
}

pub mod f64s {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::bytes(v, f64::to_le_bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        super::values(&String::deserialize(d)?, f64::from_le_bytes)
    }
}

pub mod opt_f32s {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<f32>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&super::bytes(v, f32::to_le_bytes)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f32>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| super::values(&t, f32::from_le_bytes))
            .transpose()
    }
}

/// One optional f64, exact: serde_json's float parsing may round the last bit, and a resumed
/// run must reproduce an uninterrupted one to the bit.
pub mod opt_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&super::bytes(&[*v], f64::to_le_bytes)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(t) => match super::values::<f64, 8, D::Error>(&t, f64::from_le_bytes)?[..] {
                [v] => Ok(Some(v)),
                _ => Err(serde::de::Error::custom("expected one value")),
            },
        }
    }
}

pub mod u32s {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::bytes(v, u32::to_le_bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        super::values(&String::deserialize(d)?, u32::from_le_bytes)
    }
}

/// Content hashes (128-bit).
pub mod u128s {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u128], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::bytes(v, u128::to_le_bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u128>, D::Error> {
        super::values(&String::deserialize(d)?, u128::from_le_bytes)
    }
}

/// `Vec<[f32; 2]>` (2-D points) as one flat f32 array.
pub mod pairs {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[[f32; 2]], s: S) -> Result<S::Ok, S::Error> {
        let flat: Vec<f32> = v.iter().flatten().copied().collect();
        super::f32s::serialize(&flat, s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[f32; 2]>, D::Error> {
        Ok(super::f32s::deserialize(d)?
            .chunks_exact(2)
            .map(|c| [c[0], c[1]])
            .collect())
    }
}

/// A setting where infinity means "off" (e.g. `label-overlap = inf`): JSON has no infinity, so
/// it is written as the string "inf" (serde_json would write null, and a report would no longer
/// say what ran); TOML floats and "inf" are both read.
pub mod maybe_infinite {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_infinite() && *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_f64(*v)
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Value {
            Number(f64),
            Text(String),
        }
        match Value::deserialize(d)? {
            Value::Number(v) => Ok(v),
            Value::Text(t) if t == "inf" => Ok(f64::INFINITY),
            Value::Text(t) => Err(serde::de::Error::custom(format!(
                "expected a number or \"inf\", got {t:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Arrays {
        #[serde(with = "super::f32s")]
        a: Vec<f32>,
        #[serde(with = "super::f64s")]
        b: Vec<f64>,
        #[serde(with = "super::opt_f32s")]
        c: Option<Vec<f32>>,
        #[serde(with = "super::opt_f32s")]
        d: Option<Vec<f32>>,
        #[serde(with = "super::u32s")]
        e: Vec<u32>,
        #[serde(with = "super::u128s")]
        f: Vec<u128>,
        #[serde(with = "super::opt_f64")]
        g: Option<f64>,
        #[serde(with = "super::opt_f64")]
        h: Option<f64>,
    }

    #[test]
    fn arrays_round_trip_exactly() {
        let x = Arrays {
            a: vec![1.5, -0.1, f32::MAX, f32::MIN_POSITIVE],
            b: vec![0.1, 1e300],
            c: Some(vec![3.25]),
            d: None,
            e: vec![0, 7, u32::MAX],
            f: vec![u128::MAX, 1 << 100],
            g: Some(0.17184050718692365),
            h: None,
        };
        let text = serde_json::to_string(&x).unwrap();
        assert_eq!(serde_json::from_str::<Arrays>(&text).unwrap(), x);
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Setting {
        #[serde(with = "super::maybe_infinite")]
        ratio: f64,
    }

    #[test]
    fn infinity_is_written_as_inf_and_read_back() {
        let text = serde_json::to_string(&Setting { ratio: f64::INFINITY }).unwrap();
        assert_eq!(text, r#"{"ratio":"inf"}"#);
        assert_eq!(serde_json::from_str::<Setting>(&text).unwrap().ratio, f64::INFINITY);
        assert_eq!(serde_json::from_str::<Setting>(r#"{"ratio":0.2}"#).unwrap().ratio, 0.2);
        assert_eq!(toml::from_str::<Setting>("ratio = inf").unwrap().ratio, f64::INFINITY);
        assert!(serde_json::from_str::<Setting>(r#"{"ratio":"lots"}"#).is_err());
    }
}
