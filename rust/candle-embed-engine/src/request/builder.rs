//! Requests built in Rust: `From` conversions for `input`, and the SDK's prompt-by-prompt
//! builder.

use super::{EmbeddingInput, EmbeddingRequest, TruncationSide};

impl From<String> for EmbeddingInput {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for EmbeddingInput {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<Vec<String>> for EmbeddingInput {
    fn from(texts: Vec<String>) -> Self {
        Self::Texts(texts)
    }
}

impl From<Vec<&str>> for EmbeddingInput {
    fn from(texts: Vec<&str>) -> Self {
        Self::Texts(texts.into_iter().map(str::to_owned).collect())
    }
}

impl From<Vec<u32>> for EmbeddingInput {
    fn from(ids: Vec<u32>) -> Self {
        Self::Tokens(ids)
    }
}

impl From<Vec<Vec<u32>>> for EmbeddingInput {
    fn from(batch: Vec<Vec<u32>>) -> Self {
        Self::TokenBatch(batch)
    }
}

/// Builds an [`EmbeddingRequest`] prompt by prompt.
#[derive(Clone, Debug)]
pub struct EmbeddingRequestBuilder {
    texts: Vec<String>,
    request: EmbeddingRequest,
}

impl Default for EmbeddingRequestBuilder {
    fn default() -> Self {
        Self {
            texts: Vec::new(),
            request: EmbeddingRequest::new(EmbeddingInput::Texts(Vec::new())),
        }
    }
}

impl EmbeddingRequestBuilder {
    #[must_use]
    pub fn add_prompt(mut self, text: impl Into<String>) -> Self {
        self.texts.push(text.into());
        self
    }

    #[must_use]
    pub fn add_prompts<I, S>(mut self, texts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.texts.extend(texts.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn with_instruction(mut self, instruction: impl Into<String>) -> Self {
        self.request.instruction = Some(instruction.into());
        self
    }

    #[must_use]
    pub fn with_prompt_name(mut self, name: impl Into<String>) -> Self {
        self.request.prompt_name = Some(name.into());
        self
    }

    #[must_use]
    pub fn with_dimensions(mut self, dimensions: usize) -> Self {
        self.request.dimensions = Some(i64::try_from(dimensions).unwrap_or(i64::MAX));
        self
    }

    #[must_use]
    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.request.normalize = normalize;
        self
    }

    #[must_use]
    pub fn with_truncate_sequence(mut self, truncate: bool) -> Self {
        self.request.truncate_sequence = truncate;
        self
    }

    #[must_use]
    pub fn with_truncation(mut self, max_tokens: i64, side: TruncationSide) -> Self {
        self.request.truncate_prompt_tokens = Some(max_tokens);
        self.request.truncation_side = side;
        self
    }

    #[must_use]
    pub fn build(self) -> EmbeddingRequest {
        EmbeddingRequest {
            input: EmbeddingInput::Texts(self.texts),
            ..self.request
        }
    }
}

impl From<EmbeddingRequestBuilder> for EmbeddingRequest {
    fn from(builder: EmbeddingRequestBuilder) -> Self {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_collects_prompts_in_order() {
        let req: EmbeddingRequest = EmbeddingRequest::builder()
            .add_prompt("a")
            .add_prompt("b")
            .with_dimensions(8)
            .into();
        assert_eq!(
            req.input,
            EmbeddingInput::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(req.dimensions, Some(8));
        assert_eq!(req.len(), 2);
    }
}
