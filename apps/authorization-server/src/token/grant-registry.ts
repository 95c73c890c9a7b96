import { Inject, Injectable } from '@nestjs/common';
import { UnsupportedGrantTypeError } from '@writ/oauth';
import { GRANT_HANDLERS, GrantHandler } from './grant-handler';

/** The grant handlers by `grant_type`. */
@Injectable()
export class GrantRegistry {
  private readonly handlers: ReadonlyMap<string, GrantHandler>;

  constructor(@Inject(GRANT_HANDLERS) handlers: GrantHandler[]) {
    this.handlers = new Map(handlers.map((handler) => [handler.grantType, handler]));
  }

  /** The handler of a grant type, or `unsupported_grant_type`. */
  get(grantType: string): GrantHandler {
    const handler = this.handlers.get(grantType);
    if (!handler) throw new UnsupportedGrantTypeError('the grant_type is not supported by this server');
    return handler;
  }

  /** Every supported grant type, for discovery. */
  grantTypes(): string[] {
    return [...this.handlers.keys()];
  }
}
