//! Identifiers in the spec's forms: scenario ids are `scn-` followed by 12 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("scenario id `{0}` is not `scn-` followed by 12 lowercase hex digits")]
    Scenario(String),
    #[error("run id `{0}` is not `run-` followed by 12 lowercase hex digits")]
    Run(String),
}

fn is_hex12(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn random_hex12() -> String {
    // uuid v4 carries 122 random bits; 48 of them are plenty for a per-deployment id.
    let u = uuid::Uuid::new_v4();
    hex::encode(&u.as_bytes()[..6])
}

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal, $err:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// A fresh random identifier.
            pub fn generate() -> Self {
                Self(format!(concat!($prefix, "{}"), random_hex12()))
            }

            /// The full identifier, prefix included.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The 12 hex digits without the prefix.
            pub fn suffix(&self) -> &str {
                &self.0[$prefix.len()..]
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                match s.strip_prefix($prefix) {
                    Some(rest) if is_hex12(rest) => Ok(Self(s.to_owned())),
                    _ => Err(IdError::$err(s.to_owned())),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    ScenarioId,
    "scn-",
    Scenario,
    "A scenario identifier, `scn-` + 12 hex digits."
);
prefixed_id!(
    RunId,
    "run-",
    Run,
    "One evaluation run of a scenario, `run-` + 12 hex digits."
);

impl ScenarioId {
    /// The name of the lab's fabric network namespace, which is also the API's `network_id`.
    pub fn network_id(&self) -> String {
        format!("forge_scn_{}", self.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip() {
        let id = ScenarioId::generate();
        assert_eq!(id.as_str().len(), 16);
        assert_eq!(id.as_str().parse::<ScenarioId>().unwrap(), id);
        assert_eq!(id.network_id(), format!("forge_scn_{}", id.suffix()));
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "scn-",
            "scn-ABCDEF012345",
            "scn-0123456789",
            "xyz-0123456789ab",
            "",
        ] {
            assert!(bad.parse::<ScenarioId>().is_err(), "{bad}");
        }
        assert!("scn-def456789012".parse::<ScenarioId>().is_ok());
    }
}
