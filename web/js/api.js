// The JSON API client: bearer token, problem+json errors, ETags.

let token = null;
let onUnauthorized = () => {};

/** Sets the access token sent with every request (null: none). */
export function setToken(value) {
  token = value;
}

/** Registers what to do when the server says the token is no longer valid (401). */
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/** An error answer of the API, with its RFC 9457 problem document. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(describeProblem(status, problem));
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem || {};
    this.code = this.problem.code || `http_${status}`;
  }

  /** Field errors of a validation problem: [{field, code, message}]. */
  get fieldErrors() {
    return Array.isArray(this.problem.errors) ? this.problem.errors : [];
  }
}

function describeProblem(status, problem) {
  if (!problem) return `The server answered ${status}.`;
  const fields = Array.isArray(problem.errors) ? problem.errors : [];
  if (fields.length) return fields.map((e) => `${e.field}: ${e.message}`).join('; ');
  return problem.detail || problem.title || `The server answered ${status}.`;
}

/**
 * Calls the API. `body` is sent as JSON; `ifMatch` is a version number sent as `If-Match`.
 * Resolves to `{status, data, version}` (`version` from the ETag); rejects with ApiError on an
 * error answer, or with a TypeError when the network is down.
 */
export async function api(path, { method = 'GET', body, ifMatch, auth = true } = {}) {
  // Late timers (debounced reloads, previews) after sign-out must not reach the server.
  if (auth && !token) throw new ApiError(401, { code: 'signed_out', detail: 'You are signed out.' });
  const headers = { accept: 'application/json' };
  if (auth && token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (ifMatch !== undefined && ifMatch !== null) headers['if-match'] = `"${ifMatch}"`;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  const type = response.headers.get('content-type') || '';
  const data = type.includes('json') && response.status !== 204 ? await response.json() : null;
  if (!response.ok) {
    if (response.status === 401 && auth && token) onUnauthorized();
    throw new ApiError(response.status, data);
  }
  const etag = response.headers.get('etag');
  const version = etag ? Number(etag.replace(/^W\//, '').replaceAll('"', '')) : undefined;
  return { status: response.status, data, version };
}

/** Builds a query string from an object, skipping empty values; arrays repeat the key. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === '' || value === false) continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(key, String(item));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

let capabilities = null;

/**
 * What this server offers beyond the basics, read once from its OpenAPI document, so the UI can
 * hide features (reminders, notifications) the server does not have yet without calling them.
 */
export async function serverCapabilities() {
  if (!capabilities) {
    capabilities = api('/api/v1/openapi.json', { auth: false })
      .then(({ data }) => {
        const paths = data?.paths || {};
        const schemas = data?.components?.schemas || {};
        return {
          notifications: Boolean(paths['/api/v1/notifications']),
          reminders: Boolean(schemas.CreateTaskRequest?.properties?.reminders),
          rulePreview: Boolean(paths['/api/v1/recurrence/preview']),
        };
      })
      .catch((error) => {
        console.debug('capabilities unknown', error);
        capabilities = null;
        return { notifications: false, reminders: false, rulePreview: false };
      });
  }
  return capabilities;
}
