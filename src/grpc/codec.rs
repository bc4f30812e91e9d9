//! A prost codec that refuses fields it does not know.
//!
//! prost drops unknown fields silently when it decodes. A client built from a newer or
//! different `.proto` would then have part of its request ignored without a word, which this
//! service treats as a bug: such a request is INVALID_ARGUMENT naming the field. The check
//! decodes the message once more with `prost-reflect` against our descriptor set, which keeps
//! unknown fields, and walks it.

use std::marker::PhantomData;
use std::sync::LazyLock;

use prost::bytes::Buf;
use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::domain::{Error, FieldViolation};

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(super::FILE_DESCRIPTOR_SET)
        .expect("the build wrote a valid descriptor set")
});

#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = StrictEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        StrictEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct StrictEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for StrictEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|_| Status::internal("internal error"))
    }
}

#[derive(Debug)]
pub struct StrictDecoder<U>(PhantomData<U>);

impl<U: Message + Name + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode_strict(buf.copy_to_bytes(buf.remaining())).map(Some)
    }
}

/// Decodes `bytes` as a `U`, refusing fields `U` does not have (at any depth).
pub fn decode_strict<U: Message + Name + Default>(bytes: prost::bytes::Bytes) -> Result<U, Status> {
    let malformed = |error: prost::DecodeError| {
        Status::invalid_argument(format!(
            "the request is not a valid protobuf message: {error}"
        ))
    };
    let message = U::decode(bytes.clone()).map_err(malformed)?;
    if let Some(descriptor) = POOL.get_message_by_name(&U::full_name()) {
        let dynamic = DynamicMessage::decode(descriptor, bytes).map_err(malformed)?;
        let mut violations = Vec::new();
        unknown_fields(&dynamic, "", &mut violations);
        if !violations.is_empty() {
            return Err(Error::InvalidArgument { violations }.into());
        }
    }
    Ok(message)
}

/// Every unknown field in `message`, named `<path>.#<field number>`.
fn unknown_fields(message: &DynamicMessage, path: &str, out: &mut Vec<FieldViolation>) {
    for field in message.unknown_fields() {
        let name = format!("#{}", field.number());
        out.push(FieldViolation::new(
            crate::domain::json::join(path, &name),
            format!(
                "{} has no field number {}; was the client built from a different .proto?",
                message.descriptor().full_name(),
                field.number()
            ),
        ));
    }
    for (field, value) in message.fields() {
        let field_path = crate::domain::json::join(path, field.name());
        match value {
            Value::Message(inner) => unknown_fields(inner, &field_path, out),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(inner) = item {
                        unknown_fields(inner, &crate::domain::json::index(&field_path, i), out);
                    }
                }
            }
            Value::Map(entries) => {
                for (key, item) in entries {
                    if let Value::Message(inner) = item {
                        let key = format!("{key:?}");
                        unknown_fields(inner, &crate::domain::json::join(&field_path, &key), out);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::pb;

    #[derive(Clone, PartialEq, prost::Message)]
    struct NewerOptions {
        #[prost(string, optional, tag = "1")]
        description: Option<String>,
        #[prost(string, tag = "9")]
        priority: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct NewerStartJobRequest {
        #[prost(string, tag = "1")]
        workflow: String,
        #[prost(message, optional, tag = "2")]
        options: Option<NewerOptions>,
        #[prost(int32, tag = "7")]
        retries: i32,
    }

    #[test]
    fn unknown_fields_are_named_by_path() {
        let bytes = NewerStartJobRequest {
            workflow: "w".into(),
            options: Some(NewerOptions {
                description: None,
                priority: "high".into(),
            }),
            retries: 3,
        }
        .encode_to_vec();
        let descriptor = POOL
            .get_message_by_name(&pb::StartJobRequest::full_name())
            .unwrap();
        let dynamic = DynamicMessage::decode(descriptor, bytes.as_slice()).unwrap();
        let mut out = Vec::new();
        unknown_fields(&dynamic, "", &mut out);
        let fields: Vec<_> = out.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["#7", "options.#9"]);
    }

    #[test]
    fn every_request_message_is_in_the_pool() {
        for name in [
            pb::StartJobRequest::full_name(),
            pb::ListJobsRequest::full_name(),
            pb::ImportWorkflowsRequest::full_name(),
        ] {
            assert!(POOL.get_message_by_name(&name).is_some(), "{name}");
        }
    }
}
