//! One endpoint: OpenRouter's inference API (SPEC §11) on the proxy
//! listener — `/api/v1/chat/completions`, `/api/v1/embeddings`,
//! `/api/v1/responses`, `/api/v1/messages`, `/api/v1/models`, `/api/v1/key`.

pub(crate) mod edit;
