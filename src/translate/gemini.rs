//! OpenAI ⇄ Gemini. (Being written.)
