mod proto_types;
mod types;
