/** The `typ` of a task token: a JWT the agent presents as `subject_token`. */
export const TASK_TOKEN_TYP = 'writ-task+jwt';

/** The claims of a task token. */
export interface TaskTokenClaims {
  iss: string;
  sub: string;
  aud: string;
  task_id: string;
  jti: string;
  iat: number;
  exp: number;
}
