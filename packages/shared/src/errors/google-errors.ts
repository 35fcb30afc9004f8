// Loads the @google/genai SDK and gives its error class to the classifier (see ./sdk-errors).
// Imported by the Gemini client module, so it runs exactly when Gemini errors become possible.
import { ApiError } from '@google/genai';
import { registerGoogleErrors } from './sdk-errors';

registerGoogleErrors({ ApiError });
