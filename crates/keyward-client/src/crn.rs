//! Key CRNs (`crn:v1:<cloud>:<type>:kms:<region>:a/<account>:<instance>:key:<key id>`), as a
//! customer hands them to an integrated service, and the CRNs a service gives its own resources
//! in the same account (what it registers on the key).

/// A parsed key CRN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCrn {
    /// `<cloud>:<type>`, e.g. `bluemix:public`.
    pub cloud: String,
    /// The region.
    pub region: String,
    /// The account scope, `a/<account id>`.
    pub account: String,
    /// The KMS instance (the `bluemix-instance` of every call on the key).
    pub instance: String,
    /// The key's id.
    pub key_id: String,
}

impl KeyCrn {
    /// Parses a key CRN; `None` for anything else (another service, a missing field).
    pub fn parse(crn: &str) -> Option<KeyCrn> {
        let parts: Vec<&str> = crn.split(':').collect();
        match parts.as_slice() {
            [
                "crn",
                "v1",
                cloud,
                ctype,
                "kms",
                region,
                account,
                instance,
                "key",
                id,
            ] if !instance.is_empty() && !id.is_empty() && account.starts_with("a/") => {
                Some(KeyCrn {
                    cloud: format!("{cloud}:{ctype}"),
                    region: (*region).to_owned(),
                    account: (*account).to_owned(),
                    instance: (*instance).to_owned(),
                    key_id: (*id).to_owned(),
                })
            }
            _ => None,
        }
    }

    /// The CRN of `service`'s instance `instance` in the key's account and region:
    /// `crn:v1:<cloud>:<type>:<service>:<region>:a/<account>:<instance>::`.
    pub fn service_crn(&self, service: &str, instance: &str) -> String {
        format!(
            "crn:v1:{}:{service}:{}:{}:{instance}::",
            self.cloud, self.region, self.account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_crns_parse_and_name_the_service_instance() {
        let k = KeyCrn::parse("crn:v1:bluemix:public:kms:us-south:a/acc:inst-1:key:k-9").unwrap();
        assert_eq!((k.instance.as_str(), k.key_id.as_str()), ("inst-1", "k-9"));
        assert_eq!(
            k.service_crn("messagehub", "es-1"),
            "crn:v1:bluemix:public:messagehub:us-south:a/acc:es-1::"
        );
    }

    #[test]
    fn other_crns_do_not_parse() {
        for bad in [
            "",
            "not-a-crn",
            "crn:v1:bluemix:public:kms:us-south:a/acc:inst-1:key:",
            "crn:v1:bluemix:public:kms:us-south:a/acc::key:k",
            "crn:v1:bluemix:public:messagehub:us-south:a/acc:i:key:k",
            "crn:v1:bluemix:public:kms:us-south:a/acc:i:key:k:extra",
            "crn:v1:bluemix:public:kms:us-south:acc:i:key:k",
        ] {
            assert_eq!(KeyCrn::parse(bad), None, "{bad}");
        }
    }
}
