/** The answer to `POST /v1/tasks`. */
export interface CreatedTaskDto {
  task_id: string;
  task_token: string;
  expires_at: string;
  status: 'active';
}
