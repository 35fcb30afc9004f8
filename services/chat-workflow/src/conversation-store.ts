import type Redis from 'ioredis';
import { type ChatMessage, conversationKey } from '@tollgate/shared';

/**
 * Conversation history in Redis, one list per user and conversation (a conversation id never
 * reaches another user's history), trimmed to the newest messages and expiring when idle.
 */
export class ConversationStore {
  constructor(
    private readonly redis: Redis,
    private readonly namespace: string,
    private readonly opts: { maxMessages: number; ttlSeconds: number },
  ) {}

  private key(userId: string, conversationId: string): string {
    return conversationKey(this.namespace, userId, conversationId);
  }

  async load(userId: string, conversationId: string): Promise<ChatMessage[]> {
    const raw = await this.redis.lrange(this.key(userId, conversationId), -this.opts.maxMessages, -1);
    return raw.map((m) => JSON.parse(m) as ChatMessage);
  }

  async append(userId: string, conversationId: string, messages: ChatMessage[]): Promise<void> {
    const key = this.key(userId, conversationId);
    await this.redis
      .multi()
      .rpush(key, ...messages.map((m) => JSON.stringify(m)))
      .ltrim(key, -this.opts.maxMessages, -1)
      .expire(key, this.opts.ttlSeconds)
      .exec();
  }
}
