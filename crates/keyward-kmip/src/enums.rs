//! The KMIP enumeration values Keyward reads or writes (KMIP 1.4 §9.1.3.2, 2.1 §11).
#![allow(missing_docs)]

pub mod operation {
    pub const CREATE: u32 = 0x01;
    pub const CREATE_KEY_PAIR: u32 = 0x02;
    pub const REGISTER: u32 = 0x03;
    pub const LOCATE: u32 = 0x08;
    pub const CHECK: u32 = 0x09;
    pub const GET: u32 = 0x0A;
    pub const GET_ATTRIBUTES: u32 = 0x0B;
    pub const GET_ATTRIBUTE_LIST: u32 = 0x0C;
    pub const ADD_ATTRIBUTE: u32 = 0x0D;
    pub const MODIFY_ATTRIBUTE: u32 = 0x0E;
    pub const DELETE_ATTRIBUTE: u32 = 0x0F;
    pub const GET_USAGE_ALLOCATION: u32 = 0x11;
    pub const ACTIVATE: u32 = 0x12;
    pub const REVOKE: u32 = 0x13;
    pub const DESTROY: u32 = 0x14;
    pub const QUERY: u32 = 0x18;
    pub const DISCOVER_VERSIONS: u32 = 0x1E;
    pub const ENCRYPT: u32 = 0x1F;
    pub const DECRYPT: u32 = 0x20;
    pub const SIGN: u32 = 0x21;
    pub const SIGNATURE_VERIFY: u32 = 0x22;
    pub const MAC: u32 = 0x23;
    pub const MAC_VERIFY: u32 = 0x24;
}

pub mod result_status {
    pub const SUCCESS: u32 = 0;
    pub const OPERATION_FAILED: u32 = 1;
}

pub mod result_reason {
    pub const ITEM_NOT_FOUND: u32 = 0x01;
    pub const RESPONSE_TOO_LARGE: u32 = 0x02;
    pub const AUTHENTICATION_NOT_SUCCESSFUL: u32 = 0x03;
    pub const INVALID_MESSAGE: u32 = 0x04;
    pub const OPERATION_NOT_SUPPORTED: u32 = 0x05;
    pub const MISSING_DATA: u32 = 0x06;
    pub const INVALID_FIELD: u32 = 0x07;
    pub const FEATURE_NOT_SUPPORTED: u32 = 0x08;
    pub const CRYPTOGRAPHIC_FAILURE: u32 = 0x0A;
    pub const ILLEGAL_OPERATION: u32 = 0x0B;
    pub const PERMISSION_DENIED: u32 = 0x0C;
    pub const INDEX_OUT_OF_BOUNDS: u32 = 0x0E;
    pub const KEY_FORMAT_TYPE_NOT_SUPPORTED: u32 = 0x10;
    pub const KEY_COMPRESSION_TYPE_NOT_SUPPORTED: u32 = 0x11;
    pub const GENERAL_FAILURE: u32 = 0x100;
}

pub mod object_type {
    pub const CERTIFICATE: u32 = 1;
    pub const SYMMETRIC_KEY: u32 = 2;
    pub const PUBLIC_KEY: u32 = 3;
    pub const PRIVATE_KEY: u32 = 4;
    pub const SECRET_DATA: u32 = 7;
    pub const OPAQUE_OBJECT: u32 = 8;
}

pub mod algorithm {
    pub const AES: u32 = 3;
    pub const RSA: u32 = 4;
    pub const HMAC_SHA1: u32 = 7;
    pub const HMAC_SHA256: u32 = 9;
    pub const HMAC_SHA384: u32 = 10;
    pub const HMAC_SHA512: u32 = 11;
}

pub mod key_format {
    pub const RAW: u32 = 1;
    pub const OPAQUE: u32 = 2;
    pub const PKCS_1: u32 = 3;
    pub const PKCS_8: u32 = 4;
    pub const X_509: u32 = 5;
    pub const TRANSPARENT_SYMMETRIC_KEY: u32 = 7;
    pub const TRANSPARENT_RSA_PUBLIC_KEY: u32 = 11;
}

pub mod state {
    pub const PRE_ACTIVE: u8 = 1;
    pub const ACTIVE: u8 = 2;
    pub const DEACTIVATED: u8 = 3;
    pub const COMPROMISED: u8 = 4;
    pub const DESTROYED: u8 = 5;
    pub const DESTROYED_COMPROMISED: u8 = 6;
}

pub mod block_cipher_mode {
    pub const CBC: u32 = 1;
    pub const GCM: u32 = 9;
}

pub mod padding {
    pub const NONE: u32 = 1;
    pub const PKCS5: u32 = 3;
    pub const PSS: u32 = 10;
    pub const PKCS1_V1_5: u32 = 8;
}

pub mod hashing {
    pub const SHA_1: u32 = 4;
    pub const SHA_256: u32 = 6;
    pub const SHA_384: u32 = 7;
    pub const SHA_512: u32 = 8;
}

pub mod signature_algorithm {
    pub const SHA256_WITH_RSA: u32 = 5;
    pub const SHA384_WITH_RSA: u32 = 6;
    pub const SHA512_WITH_RSA: u32 = 7;
    pub const RSASSA_PSS: u32 = 8;
}

pub mod query_function {
    pub const OPERATIONS: u32 = 1;
    pub const OBJECTS: u32 = 2;
    pub const SERVER_INFORMATION: u32 = 3;
}

pub mod name_type {
    pub const TEXT: u32 = 1;
}

pub mod usage_mask {
    pub const SIGN: i32 = 0x01;
    pub const VERIFY: i32 = 0x02;
    pub const ENCRYPT: i32 = 0x04;
    pub const DECRYPT: i32 = 0x08;
    pub const MAC_GENERATE: i32 = 0x80;
    pub const MAC_VERIFY: i32 = 0x100;
    pub const WRAP_KEY: i32 = 0x10;
}

pub mod validity {
    pub const VALID: u32 = 1;
    pub const INVALID: u32 = 2;
}

pub mod revocation_reason {
    pub const KEY_COMPROMISE: u32 = 2;
    pub const CA_COMPROMISE: u32 = 3;
}
