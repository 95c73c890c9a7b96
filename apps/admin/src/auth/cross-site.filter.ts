import type { NextFunction, Request, Response } from 'express';
import { fromAnotherSite } from '@writ/platform';

/**
 * Refuses, before its admin token is looked at, a request that a browser sent on behalf of
 * another site's page (Fetch Metadata: `Sec-Fetch-Site: cross-site` or `same-site`; the
 * console itself is `same-origin`, and tools such as curl send no such header). Such a page
 * cannot hold an admin token, so it has nothing to do with the admin API; but each of its
 * tokenless requests would count as a failed authentication of the admin's own address, and
 * past the failure throttle's limit the admin's real token would be refused with `429` too.
 * The refusal is `403`, and it is neither counted nor audited.
 */
export function refuseCrossSiteRequests() {
  return (req: Request, res: Response, next: NextFunction): void => {
    if (!fromAnotherSite(req)) return next();
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Connection', 'close');
    res.status(403).json({ error: 'forbidden', message: 'the admin API refuses requests made by another site (Sec-Fetch-Site)' });
  };
}
