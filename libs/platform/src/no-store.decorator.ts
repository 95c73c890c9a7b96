import { applyDecorators, Header } from '@nestjs/common';

/**
 * For responses that carry a credential or other secret (a token shown once): never stored by
 * a cache, as RFC 6749 §5.1 asks for token responses (`Cache-Control: no-store`, and
 * `Pragma: no-cache` for HTTP/1.0 caches). Every Writ response already defaults to
 * `no-store`; this makes the requirement explicit where it matters and survives a change of
 * that default.
 */
export const NoStore = (): MethodDecorator => applyDecorators(Header('Cache-Control', 'no-store'), Header('Pragma', 'no-cache'));
