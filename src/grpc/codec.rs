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
    let descriptor = POOL.get_message_by_name(&U::full_name());
    let mut unknown = false;
    if let Some(descriptor) = &descriptor {
        let mut values = 0;
        if let Err(violation) = check_shape(&bytes, descriptor, 1, "", &mut values, &mut unknown) {
            return Err(Error::InvalidArgument {
                violations: vec![violation],
            }
            .into());
        }
    }
    let message = U::decode(bytes.clone()).map_err(malformed)?;
    // The walk saw a field number the message does not have: a decoding with the descriptor
    // names each such field by its path (`variables."key".#9`), for the answer.
    if let Some(descriptor) = descriptor.filter(|_| unknown) {
        let dynamic = DynamicMessage::decode(descriptor, bytes).map_err(malformed)?;
        let mut violations = Vec::new();
        unknown_fields(&dynamic, "", &mut violations);
        if !violations.is_empty() {
            return Err(Error::InvalidArgument { violations }.into());
        }
    }
    Ok(message)
}

/// Holds a request to the bounds JSON bodies have on the JSON gateway (`domain::json`:
/// `MAX_DEPTH` levels, `MAX_VALUES` values) by walking its wire form, before anything is
/// decoded: a message of millions of tiny `google.protobuf.Value`s is refused without being
/// built. Levels and values are counted as the same document's JSON would be: every message
/// is a level except `Value` and map entries (the JSON `{"a": 1}` is a `Struct`, a map entry
/// and a `Value`), and every field occurrence is a value except those inside `Value`s and map
/// entries. prost has no such bounds (only a recursion limit of 100 messages), hence this
/// walk. Bytes that are not a valid message are left for the decoder to report. `unknown` is
/// set when a field number the message does not define is met.
fn check_shape(
    mut bytes: &[u8],
    descriptor: &prost_reflect::MessageDescriptor,
    depth: usize,
    path: &str,
    values: &mut usize,
    unknown: &mut bool,
) -> Result<(), FieldViolation> {
    use crate::domain::json::{MAX_DEPTH, MAX_VALUES};
    use prost::encoding::decode_varint;
    let transparent =
        descriptor.is_map_entry() || descriptor.full_name() == "google.protobuf.Value";
    // Inside a JSON document, violations name the request field that holds it.
    let in_json = transparent
        || matches!(
            descriptor.full_name(),
            "google.protobuf.Struct" | "google.protobuf.ListValue"
        );
    while !bytes.is_empty() {
        let Ok(tag) = decode_varint(&mut bytes) else {
            return Ok(());
        };
        let field = descriptor.get_field((tag >> 3) as u32);
        *unknown |= field.is_none();
        let field_path = match &field {
            Some(field) if !in_json => crate::domain::json::join(path, field.name()),
            _ => path.to_owned(),
        };
        if !transparent {
            *values += 1;
            if *values > MAX_VALUES {
                return Err(FieldViolation::new(
                    field_path,
                    format!("is past the limit of {MAX_VALUES} values (JSON values and fields) in one request"),
                ));
            }
        }
        let skip = match tag & 7 {
            0 => match decode_varint(&mut bytes) {
                Ok(_) => 0,
                Err(_) => return Ok(()),
            },
            1 => 8,
            5 => 4,
            2 => {
                let Ok(len) = decode_varint(&mut bytes) else {
                    return Ok(());
                };
                let Some(inner) = usize::try_from(len).ok().and_then(|len| bytes.get(..len)) else {
                    return Ok(());
                };
                if let Some(prost_reflect::Kind::Message(inner_descriptor)) =
                    field.as_ref().map(|field| field.kind())
                {
                    let inner_depth = match inner_descriptor.is_map_entry()
                        || inner_descriptor.full_name() == "google.protobuf.Value"
                    {
                        true => depth,
                        false => depth + 1,
                    };
                    if inner_depth > MAX_DEPTH {
                        return Err(FieldViolation::new(
                            field_path,
                            format!("nests objects and arrays deeper than {MAX_DEPTH} levels"),
                        ));
                    }
                    check_shape(
                        inner,
                        &inner_descriptor,
                        inner_depth,
                        &field_path,
                        values,
                        unknown,
                    )?;
                }
                inner.len()
            }
            // Groups (deprecated) and invalid wire types: the decoder says what is wrong.
            _ => return Ok(()),
        };
        let Some(rest) = bytes.get(skip..) else {
            return Ok(());
        };
        bytes = rest;
    }
    Ok(())
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

    fn start_with_variable(value: serde_json::Value) -> prost::bytes::Bytes {
        let variables =
            crate::grpc::map_to_struct(serde_json::json!({ "x": value }).as_object().unwrap());
        pb::StartJobRequest {
            workflow: "w".into(),
            options: Some(pb::JobOptions {
                variables: Some(variables),
                ..Default::default()
            }),
        }
        .encode_to_vec()
        .into()
    }

    fn refused_field(bytes: prost::bytes::Bytes) -> (String, String) {
        let status = decode_strict::<pb::StartJobRequest>(bytes).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let details = tonic_types::StatusExt::get_error_details(&status);
        let violation = &details
            .bad_request()
            .expect("a bad request")
            .field_violations[0];
        (violation.field.clone(), violation.description.clone())
    }

    #[test]
    fn requests_are_held_to_the_json_bounds_of_the_gateway() {
        let nested = |depth: usize| {
            (0..depth).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]))
        };
        // Request (1), options (2), variables (3), x's arrays from 4 on: as the HTTP body.
        assert!(decode_strict::<pb::StartJobRequest>(start_with_variable(nested(29))).is_ok());
        let (field, description) = refused_field(start_with_variable(nested(30)));
        assert_eq!(field, "options.variables");
        assert!(description.contains("deeper than 32"), "{description}");

        let many = serde_json::Value::Array(vec![serde_json::json!(0); 200_000]);
        let (field, description) = refused_field(start_with_variable(many));
        assert_eq!(field, "options.variables");
        assert!(description.contains("100000"), "{description}");
    }

    #[test]
    fn a_workers_outgoing_values_are_held_to_the_same_bounds() {
        let nested = (0..31).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]));
        let outgoing =
            crate::grpc::map_to_struct(serde_json::json!({ "x": nested }).as_object().unwrap());
        let bytes = pb::CompleteTaskRequest {
            task_token: "t".into(),
            finish_state: "success".into(),
            outgoing: Some(outgoing),
            error_message: String::new(),
        }
        .encode_to_vec();
        let status = decode_strict::<pb::CompleteTaskRequest>(bytes.into()).unwrap_err();
        let details = tonic_types::StatusExt::get_error_details(&status);
        let violation = &details
            .bad_request()
            .expect("a bad request")
            .field_violations[0];
        assert_eq!(violation.field, "outgoing");
        assert!(violation.description.contains("deeper than 32"));
    }

    #[test]
    fn every_request_message_is_in_the_pool() {
        for name in [
            pb::StartJobRequest::full_name(),
            pb::ListJobsRequest::full_name(),
            pb::ImportWorkflowsRequest::full_name(),
            pb::CancelJobsRequest::full_name(),
            pb::FinishTaskRequest::full_name(),
            pb::WatchJobRequest::full_name(),
            pb::PollTasksRequest::full_name(),
            pb::CompleteTaskRequest::full_name(),
        ] {
            assert!(POOL.get_message_by_name(&name).is_some(), "{name}");
        }
    }
}
