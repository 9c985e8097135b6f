//! OpenAI ⇄ Anthropic. (Being written.)
