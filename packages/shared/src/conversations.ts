/**
 * Conversation history keys, shared because two sides read them: the chat worker loads and
 * appends, and gateway admission counts a conversation's bytes into its worst-case input.
 */
export const CONVERSATION_MAX_MESSAGES = 50;

export function conversationKey(namespace: string, userId: string, conversationId: string): string {
  return `${namespace}:conv:${userId}:${conversationId}`;
}
