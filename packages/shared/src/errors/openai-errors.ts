// Loads the OpenAI SDK and gives its error classes to the classifier (see ./sdk-errors).
// Imported by the OpenAI client module, so it runs exactly when OpenAI errors become possible.
import OpenAI from 'openai';
import { ContentFilterFinishReasonError } from 'openai/core/error';
import { registerOpenAiErrors } from './sdk-errors';

registerOpenAiErrors({
  APIError: OpenAI.APIError,
  APIConnectionError: OpenAI.APIConnectionError,
  APIConnectionTimeoutError: OpenAI.APIConnectionTimeoutError,
  APIUserAbortError: OpenAI.APIUserAbortError,
  ContentFilterFinishReasonError,
});
