//! CNI_ARGS: `K=V;K2=V2`, with the Go library's rules (exactly one `=` per pair,
//! unknown keys rejected unless `IgnoreUnknown` is true).

use super::error::{code, CniError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

/// Go's `UnmarshallableBool`: "1"/"true" and "0"/"false", case-insensitive.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

impl CniArgs {
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        if s.is_empty() {
            return Ok(CniArgs { pairs });
        }
        for pair in s.split(';') {
            let kv: Vec<&str> = pair.split('=').collect();
            if kv.len() != 2 {
                return Err(CniError::new(code::INVALID_ENV, format!("ARGS: invalid pair {pair:?}")));
            }
            pairs.push((kv[0].to_string(), kv[1].to_string()));
        }
        Ok(CniArgs { pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Reject keys the plugin does not know, unless `IgnoreUnknown` says otherwise.
    /// `IgnoreUnknown` itself (and the Kubernetes keys that plugins declare) count as known.
    pub fn check_known(&self, known: &[&str]) -> Result<(), CniError> {
        let ignore = match self.get("IgnoreUnknown") {
            None => false,
            Some(v) => parse_bool(v).ok_or_else(|| {
                CniError::new(
                    code::INVALID_ENV,
                    format!("ARGS: error parsing value of pair \"IgnoreUnknown={v}\": boolean unmarshal error: invalid input {v}"),
                )
            })?,
        };
        if ignore {
            return Ok(());
        }
        let unknown: Vec<String> = self
            .pairs
            .iter()
            .filter(|(k, _)| k != "IgnoreUnknown" && !known.contains(&k.as_str()))
            .map(|(k, v)| format!("{:?}", format!("{k}={v}")))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                code::INVALID_ENV,
                format!("ARGS: unknown args [{}]", unknown.join(" ")),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs() {
        let a = CniArgs::parse("IP=10.0.0.5;MAC=aa:bb:cc:dd:ee:ff").unwrap();
        assert_eq!(a.get("IP"), Some("10.0.0.5"));
        assert_eq!(a.get("MAC"), Some("aa:bb:cc:dd:ee:ff"));
        assert_eq!(a.get("ip"), None, "keys are case-sensitive");
        assert_eq!(CniArgs::parse("").unwrap().pairs().len(), 0);
    }

    #[test]
    fn bad_pairs_rejected() {
        for bad in ["IP", "IP=1=2", "A=1;;B=2", "=="] {
            assert_eq!(CniArgs::parse(bad).unwrap_err().code, 4, "{bad}");
        }
        // An empty value is still exactly one '='.
        assert!(CniArgs::parse("K8S_POD_NAME=").is_ok());
    }

    #[test]
    fn unknown_keys() {
        let a = CniArgs::parse("IP=1.2.3.4;K8S_POD_NAME=x").unwrap();
        let e = a.check_known(&["IP"]).unwrap_err();
        assert_eq!(e.msg, "ARGS: unknown args [\"K8S_POD_NAME=x\"]");
        let a = CniArgs::parse("IgnoreUnknown=1;IP=1.2.3.4;K8S_POD_NAME=x").unwrap();
        assert!(a.check_known(&["IP"]).is_ok());
        let a = CniArgs::parse("IgnoreUnknown=TRUE;X=y").unwrap();
        assert!(a.check_known(&[]).is_ok());
        let a = CniArgs::parse("IgnoreUnknown=0;X=y").unwrap();
        assert!(a.check_known(&[]).is_err());
        let a = CniArgs::parse("IgnoreUnknown=maybe").unwrap();
        assert!(a.check_known(&[]).is_err());
    }
}
