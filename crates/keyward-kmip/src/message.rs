//! Request and response messages: the header, batch items, versions, and what a failed item
//! carries (KMIP 1.4 §6–7, 2.1 §8).

use crate::enums::{operation, result_reason, result_status};
use crate::tag;
use crate::ttlv::{Ttlv, Value};

/// A protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: i32,
    /// Minor.
    pub minor: i32,
}

impl Version {
    /// KMIP 1.0.
    pub const V1_0: Version = Version { major: 1, minor: 0 };
    /// KMIP 1.2 (what most clients speak).
    pub const V1_2: Version = Version { major: 1, minor: 2 };
    /// KMIP 2.0.
    pub const V2_0: Version = Version { major: 2, minor: 0 };

    /// Whether attributes are 2.x's (tags in an Attributes structure) rather than 1.x's
    /// (name/value pairs).
    pub fn v2(self) -> bool {
        self.major >= 2
    }

    /// The version as a Protocol Version structure.
    pub fn to_ttlv(self) -> Ttlv {
        Ttlv::structure(
            tag::PROTOCOL_VERSION,
            vec![
                Ttlv::new(tag::PROTOCOL_VERSION_MAJOR, Value::Integer(self.major)),
                Ttlv::new(tag::PROTOCOL_VERSION_MINOR, Value::Integer(self.minor)),
            ],
        )
    }

    /// A Protocol Version structure.
    pub fn from_ttlv(t: &Ttlv) -> Option<Version> {
        Some(Version {
            major: t.child(tag::PROTOCOL_VERSION_MAJOR)?.as_int()?,
            minor: t.child(tag::PROTOCOL_VERSION_MINOR)?.as_int()?,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The versions Keyward speaks, preferred first (what Discover Versions answers).
pub const SUPPORTED_VERSIONS: [Version; 7] = [
    Version { major: 2, minor: 1 },
    Version { major: 2, minor: 0 },
    Version { major: 1, minor: 4 },
    Version { major: 1, minor: 3 },
    Version { major: 1, minor: 2 },
    Version { major: 1, minor: 1 },
    Version { major: 1, minor: 0 },
];

/// Why a batch item (or a whole message) failed: a KMIP Result Reason and a message for people.
/// Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The Result Reason.
    pub reason: u32,
    /// The Result Message.
    pub message: String,
}

impl Failure {
    /// A failure for `reason`.
    pub fn new(reason: u32, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }

    /// Invalid Field.
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(result_reason::INVALID_FIELD, message)
    }

    /// Missing Data.
    pub fn missing(what: &str) -> Failure {
        Failure::new(result_reason::MISSING_DATA, format!("{what} is required"))
    }

    /// Invalid Message.
    pub fn malformed(message: impl Into<String>) -> Failure {
        Failure::new(result_reason::INVALID_MESSAGE, message)
    }

    /// Permission Denied.
    pub fn denied(message: impl Into<String>) -> Failure {
        Failure::new(result_reason::PERMISSION_DENIED, message)
    }

    /// Item Not Found.
    pub fn not_found() -> Failure {
        Failure::new(result_reason::ITEM_NOT_FOUND, "no such object")
    }

    /// Feature Not Supported.
    pub fn unsupported(message: impl Into<String>) -> Failure {
        Failure::new(result_reason::FEATURE_NOT_SUPPORTED, message)
    }
}

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// The request's version: the response is in it.
    pub version: Version,
    /// The Maximum Response Size, in bytes.
    pub max_response_size: Option<usize>,
    /// Whether the client asked for asynchronous operations.
    pub asynchronous: bool,
    /// Whether to go on after a failed item (Batch Error Continuation Option Continue).
    pub continue_on_error: bool,
    /// The batch items.
    pub items: Vec<RequestItem>,
}

/// One requested operation.
#[derive(Debug)]
pub struct RequestItem {
    /// The Operation.
    pub operation: u32,
    /// The Unique Batch Item ID, echoed in the response.
    pub id: Option<Vec<u8>>,
    /// The Request Payload.
    pub payload: Ttlv,
}

/// The version a message says it is in, if it says (for answering a malformed message in it).
pub fn version_of(message: &Ttlv) -> Option<Version> {
    message
        .child(tag::REQUEST_HEADER)?
        .child(tag::PROTOCOL_VERSION)
        .and_then(Version::from_ttlv)
}

/// Parses a Request Message.
pub fn parse_request(message: &Ttlv) -> Result<Request, Failure> {
    if message.tag != tag::REQUEST_MESSAGE {
        return Err(Failure::malformed("not a Request Message"));
    }
    let header = message
        .child(tag::REQUEST_HEADER)
        .ok_or_else(|| Failure::malformed("the Request Header is missing"))?;
    let version = header
        .child(tag::PROTOCOL_VERSION)
        .and_then(Version::from_ttlv)
        .ok_or_else(|| Failure::malformed("the Protocol Version is missing or malformed"))?;
    let max_response_size = match header.child(tag::MAXIMUM_RESPONSE_SIZE) {
        Some(t) => Some(
            t.as_int()
                .filter(|v| *v > 0)
                .ok_or_else(|| Failure::malformed("Maximum Response Size must be positive"))?
                as usize,
        ),
        None => None,
    };
    let asynchronous = header
        .child(tag::ASYNCHRONOUS_INDICATOR)
        .and_then(Ttlv::as_bool)
        .unwrap_or(false);
    // Continue (1) goes on after a failure; Stop (2, the default) and Undo (3, which Keyward
    // does not offer) stop at the first.
    let continue_on_error = header
        .child(tag::BATCH_ERROR_CONTINUATION_OPTION)
        .and_then(Ttlv::as_enum)
        == Some(1);
    let count = header
        .child(tag::BATCH_COUNT)
        .and_then(Ttlv::as_int)
        .ok_or_else(|| Failure::malformed("the Batch Count is missing"))?;
    let mut items = Vec::new();
    for item in message.children(tag::BATCH_ITEM) {
        let operation = item
            .child(tag::OPERATION)
            .and_then(Ttlv::as_enum)
            .ok_or_else(|| Failure::malformed("a batch item has no Operation"))?;
        let id = item
            .child(tag::UNIQUE_BATCH_ITEM_ID)
            .and_then(Ttlv::as_bytes)
            .map(<[u8]>::to_vec);
        let payload = item
            .child(tag::REQUEST_PAYLOAD)
            .cloned()
            .unwrap_or_else(|| Ttlv::structure(tag::REQUEST_PAYLOAD, vec![]));
        items.push(RequestItem {
            operation,
            id,
            payload,
        });
    }
    if items.is_empty() || usize::try_from(count).ok() != Some(items.len()) {
        return Err(Failure::malformed(format!(
            "the Batch Count ({count}) does not match the {} batch items",
            items.len()
        )));
    }
    Ok(Request {
        version,
        max_response_size,
        asynchronous,
        continue_on_error,
        items,
    })
}

/// One answered operation.
#[derive(Debug)]
pub struct ResponseItem {
    /// The Operation, when known.
    pub operation: Option<u32>,
    /// The Unique Batch Item ID of the request item.
    pub id: Option<Vec<u8>>,
    /// The Response Payload's items, or why the operation failed.
    pub outcome: Result<Vec<Ttlv>, Failure>,
}

/// Builds a Response Message in `version`.
pub fn response(version: Version, now: i64, items: Vec<ResponseItem>) -> Ttlv {
    let header = Ttlv::structure(
        tag::RESPONSE_HEADER,
        vec![
            version.to_ttlv(),
            Ttlv::new(tag::TIME_STAMP, Value::DateTime(now)),
            Ttlv::new(tag::BATCH_COUNT, Value::Integer(items.len() as i32)),
        ],
    );
    let mut message = vec![header];
    for item in items {
        let mut fields = Vec::new();
        if let Some(op) = item.operation {
            fields.push(Ttlv::new(tag::OPERATION, Value::Enumeration(op)));
        }
        if let Some(id) = item.id {
            fields.push(Ttlv::new(tag::UNIQUE_BATCH_ITEM_ID, Value::ByteString(id)));
        }
        match item.outcome {
            Ok(payload) => {
                fields.push(Ttlv::new(
                    tag::RESULT_STATUS,
                    Value::Enumeration(result_status::SUCCESS),
                ));
                fields.push(Ttlv::structure(tag::RESPONSE_PAYLOAD, payload));
            }
            Err(f) => {
                fields.push(Ttlv::new(
                    tag::RESULT_STATUS,
                    Value::Enumeration(result_status::OPERATION_FAILED),
                ));
                fields.push(Ttlv::new(tag::RESULT_REASON, Value::Enumeration(f.reason)));
                fields.push(Ttlv::new(tag::RESULT_MESSAGE, Value::TextString(f.message)));
            }
        }
        message.push(Ttlv::structure(tag::BATCH_ITEM, fields));
    }
    Ttlv::structure(tag::RESPONSE_MESSAGE, message)
}

/// A response of one failed item, for a message that could not be parsed.
pub fn failure_response(version: Version, now: i64, failure: Failure) -> Ttlv {
    response(
        version,
        now,
        vec![ResponseItem {
            operation: None,
            id: None,
            outcome: Err(failure),
        }],
    )
}

/// The operations Keyward serves, for Query.
pub const SUPPORTED_OPERATIONS: &[u32] = &[
    operation::CREATE,
    operation::CREATE_KEY_PAIR,
    operation::REGISTER,
    operation::LOCATE,
    operation::CHECK,
    operation::GET,
    operation::GET_ATTRIBUTES,
    operation::GET_ATTRIBUTE_LIST,
    operation::ADD_ATTRIBUTE,
    operation::MODIFY_ATTRIBUTE,
    operation::DELETE_ATTRIBUTE,
    operation::GET_USAGE_ALLOCATION,
    operation::ACTIVATE,
    operation::REVOKE,
    operation::DESTROY,
    operation::QUERY,
    operation::DISCOVER_VERSIONS,
    operation::ENCRYPT,
    operation::DECRYPT,
    operation::SIGN,
    operation::SIGNATURE_VERIFY,
    operation::MAC,
];
