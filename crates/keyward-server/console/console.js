// Keyward console: plain JavaScript over Keyward's REST API (no build step, no dependency).
//
// The access token lives in this closure's memory only: never in storage, a cookie or a URL.
// Every request carries it as `Authorization: Bearer`, which a cross-site page cannot make a
// browser send, so no state change can be forged (CSRF); the API checks every request exactly as
// it checks any client's. The DOM is built from elements and text nodes only, never from HTML
// strings, so nothing the API returns is ever parsed as markup.
'use strict';

(() => {
  const KEY_MEDIA = 'application/vnd.ibm.kms.key+json';
  const POLICY_MEDIA = 'application/vnd.ibm.kms.policy+json';
  const STATES = { 0: 'Pre-active', 1: 'Active', 2: 'Suspended', 3: 'Deactivated', 5: 'Destroyed' };
  const ROLES = ['Reader', 'ReaderPlus', 'Writer', 'Manager', 'KeyPurge', 'KmipAdapterManager',
    'Administrator'];

  // The session: in memory only.
  const session = { token: null, instance: null, iamId: null };

  // ---------------------------------------------------------------------------------------
  // DOM helpers
  // ---------------------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  /** An element: attributes (on* are listeners), then children (strings become text). */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  let uid = 0;
  /** A labelled input: returns [label, input]. */
  function field(label, attrs) {
    const id = attrs.id || `f${++uid}`;
    const input = el(attrs.tag || 'input', { ...(attrs.tag ? {} : { type: 'text' }), ...attrs, id, tag: null });
    return [el('label', { for: id }, label), input];
  }

  function select(label, options, attrs) {
    const id = (attrs && attrs.id) || `f${++uid}`;
    const s = el('select', { ...attrs, id },
      options.map(([value, text]) => el('option', { value }, text)));
    return [el('label', { for: id }, label), s];
  }

  function check(label, attrs) {
    const input = el('input', { type: 'checkbox', ...attrs });
    return el('div', {}, el('label', { class: 'inline' }, input, label));
  }

  function table(headers, rows, empty) {
    const body = rows.length
      ? rows.map((cells) => el('tr', {}, cells.map((c) => el('td', {}, c))))
      : [el('tr', {}, el('td', { class: 'empty', colspan: headers.length }, empty || 'None.'))];
    return el('table', {}, el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, body));
  }

  function dl(pairs) {
    return el('dl', { class: 'grid' }, pairs.flatMap(([k, v]) => [el('dt', {}, k),
      el('dd', {}, v === null || v === undefined || v === '' ? '—' : v)]));
  }

  const stateLabel = (s) => el('span', { class: `state-${s}` }, STATES[s] || `State ${s}`);
  const date = (d) => (d ? d.replace('T', ' ').replace(/\.\d+/, '').replace('Z', ' UTC') : '—');
  const keyType = (k) => `${k.extractable ? 'Standard' : 'Root'}${k.imported ? ' (imported)' : ''}`;

  function status(text) {
    $('status').textContent = text || '';
    if (text) hideError();
  }
  function showError(err) {
    const box = $('error');
    box.textContent = err instanceof ApiError ? err.message : `Error: ${err && err.message ? err.message : err}`;
    box.hidden = false;
    $('status').textContent = '';
  }
  function hideError() { $('error').hidden = true; $('error').textContent = ''; }

  // ---------------------------------------------------------------------------------------
  // The API
  // ---------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, text, body) {
      super(describe(status, text, body));
      this.status = status;
    }
  }

  /** An error body in words: Key Protect's (`resources[0].errorMsg` and `reasons`) or IAM's. */
  function describe(status, text, body) {
    let msg = '';
    let code = '';
    if (body && typeof body === 'object') {
      const r = Array.isArray(body.resources) ? body.resources[0] : null;
      if (r) {
        msg = r.errorMsg || '';
        const reason = Array.isArray(r.reasons) ? r.reasons[0] : null;
        if (reason) {
          code = reason.code || '';
          if (reason.message && !msg.includes(reason.message)) msg = msg ? `${msg}: ${reason.message}` : reason.message;
        }
      }
      msg = msg || body.errorMessage || body.message || body.error_description || '';
      code = code || body.errorCode || body.error || '';
    }
    const what = {
      400: 'The request was refused', 401: 'Not signed in, or the session expired',
      403: 'Not allowed with your access', 404: 'Not found', 409: 'Refused in the current state',
      410: 'Gone', 422: 'Could not be processed', 429: 'Too many requests; try again shortly',
    }[status] || `The server answered ${status} ${text || ''}`.trim();
    return `${what} (HTTP ${status}${code ? `, ${code}` : ''})${msg ? `: ${msg}` : '.'}`;
  }

  /** Calls the API with the session's token and instance; returns the parsed body (or null). */
  async function api(method, path, opts = {}) {
    const headers = { Accept: 'application/json' };
    if (session.token) headers.Authorization = `Bearer ${session.token}`;
    if (session.instance && !opts.noInstance) headers['bluemix-instance'] = session.instance;
    let body;
    if (opts.json !== undefined) {
      headers['Content-Type'] = opts.media || 'application/json';
      body = JSON.stringify(opts.json);
    } else if (opts.form) {
      headers['Content-Type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(opts.form).toString();
    }
    if (opts.prefer) headers.Prefer = opts.prefer;
    let url = path;
    if (opts.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(opts.query)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
      const s = q.toString();
      if (s) url += `?${s}`;
    }
    const resp = await fetch(url, { method, headers, body, cache: 'no-store', credentials: 'omit' });
    const text = await resp.text();
    let parsed = null;
    if (text) {
      try { parsed = JSON.parse(text); } catch (_) { parsed = text; }
    }
    if (!resp.ok) {
      const err = new ApiError(resp.status, resp.statusText, parsed);
      if (resp.status === 401 && session.token && !opts.signin) {
        // The token expired or its API key was locked: sign in again.
        signOut();
        showError(err);
      }
      throw err;
    }
    return parsed;
  }

  const kp = (metadataType, resources) => ({
    metadata: { collectionType: metadataType, collectionTotal: resources.length },
    resources,
  });
  const enc = encodeURIComponent;

  // ---------------------------------------------------------------------------------------
  // Sign-in and sign-out
  // ---------------------------------------------------------------------------------------

  async function signIn(ev) {
    ev.preventDefault();
    const input = $('apikey');
    const apikey = input.value.trim();
    const instance = $('instance').value.trim();
    if (!apikey) { showError('Enter an API key.'); return; }
    try {
      const t = await api('POST', '/identity/token', {
        form: { grant_type: 'urn:ibm:params:oauth:grant-type:apikey', apikey },
        noInstance: true,
        signin: true,
      });
      session.token = t.access_token;
      try {
        const claims = JSON.parse(atob(t.access_token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
        session.iamId = claims.sub || claims.iam_id || null;
      } catch (_) { session.iamId = null; }
      if (instance) {
        session.instance = instance;
      } else {
        const list = await api('GET', '/iam/v1/instances', { noInstance: true }).catch(() => null);
        if (!list || !list.instances || !list.instances.length) {
          session.token = null;
          throw new Error('No instance found for this API key: enter the instance id.');
        }
        session.instance = list.instances[0].id;
      }
      input.value = '';
      $('signin').hidden = true;
      $('view').hidden = false;
      $('nav').hidden = false;
      $('signout').hidden = false;
      $('who').textContent = `${session.iamId || 'signed in'} · instance ${session.instance}`;
      status('Signed in.');
      // Every sign-in starts at the keys (the previous identity's view may not be this one's).
      if (location.hash === '#/keys') route(); else location.hash = '#/keys';
    } catch (err) {
      showError(err);
    }
  }

  function signOut() {
    session.token = null;
    session.instance = null;
    session.iamId = null;
    $('view').replaceChildren();
    $('view').hidden = true;
    $('nav').hidden = true;
    $('signout').hidden = true;
    $('who').textContent = '';
    $('signin').hidden = false;
    history.replaceState(null, '', '#/');
    Object.assign(keysQuery, KEYS_QUERY);
    Object.assign(auditQuery, AUDIT_QUERY);
    hideError();
    status('Signed out.');
    $('apikey').focus();
  }

  // ---------------------------------------------------------------------------------------
  // Routing (the hash names the view; it never carries a secret)
  // ---------------------------------------------------------------------------------------

  const views = {
    keys: viewKeys, key: viewKey, rings: viewRings, policies: viewPolicies, access: viewAccess,
    kmip: viewKmip, audit: viewAudit, health: viewHealth,
  };

  async function route() {
    if (!session.token) return;
    const [, name, arg] = (location.hash || '#/keys').split('/');
    const view = views[name] || viewKeys;
    for (const a of document.querySelectorAll('#nav a')) {
      const current = a.getAttribute('href') === `#/${name === 'key' ? 'keys' : name}`;
      if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    const root = $('view');
    root.replaceChildren(el('p', { class: 'help' }, 'Loading…'));
    hideError();
    try {
      await view(root, arg ? decodeURIComponent(arg) : undefined);
    } catch (err) {
      root.replaceChildren();
      showError(err);
    }
  }

  /** Runs an action, shows its outcome in words, then re-renders the view. */
  async function act(what, fn) {
    try {
      await fn();
      await route();
      status(what);
    } catch (err) {
      showError(err);
    }
  }

  /** A modal confirmation; resolves true when confirmed. */
  function confirmDialog(title, ...body) {
    const d = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-body').replaceChildren(...body);
    return new Promise((resolve) => {
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
      d.returnValue = '';
      d.showModal();
      $('confirm-cancel').focus();
    });
  }

  // ---------------------------------------------------------------------------------------
  // Keys
  // ---------------------------------------------------------------------------------------

  const KEYS_QUERY = { search: '', state: '0,1,2,3', sort: '-creationDate', limit: 25, offset: 0 };
  const keysQuery = { ...KEYS_QUERY };

  async function viewKeys(root) {
    const q = keysQuery;
    const data = await api('GET', '/api/v2/keys', {
      query: {
        limit: q.limit, offset: q.offset, totalCount: 'true', state: q.state,
        search: q.search || undefined, sort: q.sort,
      },
    });
    const keys = (data && data.resources) || [];
    const total = data && data.metadata && data.metadata.totalCount !== undefined ? data.metadata.totalCount : keys.length;

    const [sl, search] = field('Search name or alias', { type: 'search', value: q.search, id: 'keys-search' });
    const [stl, state] = select('State', [['0,1,2,3', 'Not deleted'], ['1', 'Active'], ['2', 'Suspended'],
      ['3', 'Deactivated'], ['5', 'Destroyed'], ['0,1,2,3,5', 'All']], { id: 'keys-state' });
    state.value = q.state;
    const [sol, sort] = select('Sort by', [['-creationDate', 'Newest first'], ['creationDate', 'Oldest first'],
      ['-lastRotateDate', 'Last rotation'], ['id', 'Id'], ['state', 'State']], { id: 'keys-sort' });
    sort.value = q.sort;
    const [pl, pageSize] = select('Per page', [['25', '25'], ['50', '50'], ['100', '100'], ['200', '200']],
      { id: 'keys-limit' });
    pageSize.value = String(q.limit);
    const apply = (ev) => {
      if (ev) ev.preventDefault();
      q.search = search.value.trim(); q.state = state.value; q.sort = sort.value;
      q.limit = Number(pageSize.value); q.offset = 0;
      route();
    };
    const filters = el('form', { class: 'toolbar', role: 'search', onsubmit: apply },
      el('div', {}, sl, search), el('div', {}, stl, state), el('div', {}, sol, sort),
      el('div', {}, pl, pageSize), el('button', { type: 'submit' }, 'Apply'));
    for (const s of [state, sort, pageSize]) s.addEventListener('change', apply);

    const rows = keys.map((k) => [
      el('a', { href: `#/key/${enc(k.id)}` }, k.name),
      el('code', {}, k.id), stateLabel(k.state), keyType(k), k.keyRingID || 'default',
      date(k.lastRotateDate),
    ]);
    const from = total ? q.offset + 1 : 0;
    const to = q.offset + keys.length;
    const pager = el('div', { class: 'pager' },
      el('button', {
        type: 'button', disabled: q.offset === 0,
        onclick: () => { q.offset = Math.max(0, q.offset - q.limit); route(); },
      }, 'Previous page'),
      el('span', {}, `${from}–${to} of ${total}`),
      el('button', {
        type: 'button', disabled: to >= total,
        onclick: () => { q.offset += q.limit; route(); },
      }, 'Next page'));

    root.replaceChildren(
      el('h1', {}, 'Keys'),
      filters,
      el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'primary', onclick: () => createKeyForm(root) }, 'New key')),
      el('div', { id: 'create-key' }),
      table(['Name', 'Id', 'State', 'Type', 'Key ring', 'Last rotation'], rows, 'No keys match.'),
      pager);
  }

  async function createKeyForm(root) {
    const slot = root.querySelector('#create-key');
    const rings = await api('GET', '/api/v2/key_rings').catch(() => null);
    const ringIds = ((rings && rings.resources) || []).map((r) => r.id);
    const [nl, name] = field('Name', { required: true, id: 'new-key-name', maxlength: 90 });
    const [dl_, desc] = field('Description', { id: 'new-key-description' });
    const [tl, kind] = select('Type', [['root', 'Root key'], ['standard', 'Standard key']], { id: 'new-key-type' });
    const [rl, ring] = select('Key ring', (ringIds.length ? ringIds : ['default']).map((r) => [r, r]), { id: 'new-key-ring' });
    const [rotl, rotation] = field('Rotate every (months, empty: no policy)', { type: 'number', min: 1, max: 12, id: 'new-key-rotation' });
    const dual = check('Dual authorization to delete', { id: 'new-key-dual' });
    const [al, aliases] = field('Aliases (comma-separated, at most 5)', { id: 'new-key-aliases' });
    const [ml, material] = field('Import material (base64 of 16, 24 or 32 bytes; empty: Keyward generates it)',
      { type: 'password', id: 'new-key-material', autocomplete: 'off' });
    const secure = check('Secure import: encrypt the material in this browser to an import token (RSA-OAEP-SHA256)',
      { id: 'new-key-secure' });
    const form = el('form', { class: 'panel', 'aria-label': 'New key' },
      el('h2', {}, 'New key'),
      el('div', { class: 'cols' },
        el('div', {}, nl, name, dl_, desc, tl, kind, rl, ring),
        el('div', {}, rotl, rotation, dual, al, aliases, ml, material, secure)),
      el('div', { class: 'actions' },
        el('button', { type: 'submit', class: 'primary' }, 'Create'),
        el('button', { type: 'button', onclick: () => slot.replaceChildren() }, 'Cancel')));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const resource = { type: KEY_MEDIA, name: name.value.trim(), extractable: kind.value === 'standard' };
      if (desc.value.trim()) resource.description = desc.value.trim();
      if (ring.value && ring.value !== 'default') resource.keyRingID = ring.value;
      const al_ = aliases.value.split(',').map((a) => a.trim()).filter(Boolean);
      if (al_.length) resource.aliases = al_;
      let overrides = false;
      if (rotation.value) { resource.rotation = { interval_month: Number(rotation.value) }; overrides = true; }
      if (dual.querySelector('input').checked) { resource.dualAuthDelete = { enabled: true }; overrides = true; }
      try {
        const m = material.value.trim();
        if (m) {
          if (secure.querySelector('input').checked) Object.assign(resource, await secureImport(m));
          else resource.payload = m;
        }
        material.value = '';
        const created = await api('POST', overrides ? '/api/v2/keys_with_policy_overrides' : '/api/v2/keys', {
          json: kp(KEY_MEDIA, [resource]), media: KEY_MEDIA, prefer: 'return=representation',
        });
        const key = created.resources[0];
        location.hash = `#/key/${enc(key.id)}`;
        status(`Key ${key.name} created.`);
      } catch (err) {
        showError(err);
      }
    });
    slot.replaceChildren(form);
    name.focus();
  }

  const b64decode = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const b64encode = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));

  /** Secure import: a fresh import token; the material RSA-OAEP-SHA256-encrypted to its public
   * key and the token's nonce AES-GCM-sealed under the material, both in this browser. */
  async function secureImport(materialB64) {
    let material;
    try { material = b64decode(materialB64); } catch (_) { throw new Error('The material is not base64.'); }
    if (![16, 24, 32].includes(material.length)) throw new Error('The material must be 16, 24 or 32 bytes.');
    await api('POST', '/api/v2/import_token', { json: { expiration: 600, maxAllowedRetrievals: 1 } });
    const token = await api('GET', '/api/v2/import_token');
    const pem = new TextDecoder().decode(b64decode(token.payload));
    const der = b64decode(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''));
    const rsa = await crypto.subtle.importKey('spki', der, { name: 'RSA-OAEP', hash: 'SHA-256' }, false, ['encrypt']);
    const payload = await crypto.subtle.encrypt({ name: 'RSA-OAEP' }, rsa, material);
    const aes = await crypto.subtle.importKey('raw', material, { name: 'AES-GCM' }, false, ['encrypt']);
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const sealed = await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, aes, b64decode(token.nonce));
    material.fill(0);
    return {
      payload: b64encode(payload), encryptedNonce: b64encode(sealed), iv: b64encode(iv),
      encryptionAlgorithm: 'RSAES_OAEP_SHA_256',
    };
  }

  // ---------------------------------------------------------------------------------------
  // A key
  // ---------------------------------------------------------------------------------------

  async function viewKey(root, id) {
    const meta = await api('GET', `/api/v2/keys/${enc(id)}/metadata`);
    const key = meta.resources[0];
    const soft = (p) => p.catch((err) => err);
    const [versions, policies, regs, audit] = await Promise.all([
      soft(api('GET', `/api/v2/keys/${enc(id)}/versions`, { query: { totalCount: 'true' } })),
      soft(api('GET', `/api/v2/keys/${enc(id)}/policies`)),
      soft(api('GET', `/api/v2/keys/${enc(id)}/registrations`)),
      soft(newestEvents({ keyId: key.id }, 500)),
    ]);
    const failed = (r) => (r instanceof Error ? el('p', { class: 'help' }, r.message) : '');
    const registrations = regs instanceof Error ? [] : (regs.resources || []);

    const shutdown = () => (registrations.length
      ? [el('p', {}, `This shuts down what the key protects (${registrations.length} registered resource${registrations.length === 1 ? '' : 's'}):`),
        el('ul', {}, registrations.map((r) => el('li', {}, el('code', {}, r.resourceCrn),
          r.preventKeyDeletion ? ' (prevents deletion)' : '')))]
      : [el('p', {}, 'No registered resource depends on this key.')]);
    const keyAction = async (label, title, body, fn) => {
      if (await confirmDialog(title, el('p', {}, body), ...shutdown())) await act(label, fn);
    };
    const path = `/api/v2/keys/${enc(key.id)}`;
    const forceBox = check('Force (delete despite registrations)', { id: 'delete-force' });
    const actions = [];
    const s = key.state;
    if (s === 1 || s === 3) {
      actions.push(el('button', {
        type: 'button',
        onclick: () => keyAction('Key rotated.', `Rotate ${key.name}?`,
          'A new version becomes current; older ciphertexts still unwrap and registered services are told to rewrap.',
          () => api('POST', `${path}/actions/rotate`)),
      }, 'Rotate'));
    }
    if (s === 1) {
      actions.push(el('button', {
        type: 'button',
        onclick: () => keyAction('Key disabled.', `Disable ${key.name}?`,
          'While suspended, the key neither wraps nor unwraps.',
          () => api('POST', `${path}/actions/disable`)),
      }, 'Disable'));
    }
    if (s === 2) {
      actions.push(el('button', {
        type: 'button',
        onclick: () => keyAction('Key enabled.', `Enable ${key.name}?`,
          'The key wraps and unwraps again; registered services are told to resume.',
          () => api('POST', `${path}/actions/enable`)),
      }, 'Enable'));
    }
    if (s !== 5) {
      if (key.dualAuthDelete && key.dualAuthDelete.enabled) {
        actions.push(el('button', {
          type: 'button',
          onclick: () => keyAction('Key authorized for deletion.', `Authorize deleting ${key.name}?`,
            'A second identity with Manager may then delete it within 7 days.',
            () => api('POST', `${path}/actions/setKeyForDeletion`)),
        }, 'Authorize deletion'));
        actions.push(el('button', {
          type: 'button',
          onclick: () => act('Deletion authorization withdrawn.', () => api('POST', `${path}/actions/unsetKeyForDeletion`)),
        }, 'Withdraw deletion authorization'));
      }
      actions.push(forceBox);
      actions.push(el('button', {
        type: 'button', class: 'danger',
        onclick: () => {
          const force = forceBox.querySelector('input').checked;
          return keyAction('Key deleted.', `Delete ${key.name}?`,
            'Every ciphertext under it stops unwrapping. It can be restored within 30 days, then it is purged.',
            () => api('DELETE', path, { query: force ? { force: 'true' } : {} }));
        },
      }, 'Delete'));
    } else {
      actions.push(el('button', {
        type: 'button',
        onclick: async () => {
          // An imported key is restored with its material, which must equal the key's.
          const [ml, material] = field('Key material (base64)', { type: 'password', id: 'restore-material', autocomplete: 'off' });
          const body = key.imported
            ? [el('p', {}, 'An imported key is restored with the same material it was imported with.'), ml, material]
            : [el('p', {}, 'The key becomes Active again.')];
          if (await confirmDialog(`Restore ${key.name}?`, ...body, ...shutdown())) {
            const payload = material.value.trim();
            material.value = '';
            await act('Key restored.', () => api('POST', `${path}/restore`, key.imported
              ? { json: kp(KEY_MEDIA, [{ payload }]), media: KEY_MEDIA } : {}));
          }
        },
      }, 'Restore'));
      actions.push(el('button', {
        type: 'button', class: 'danger',
        onclick: () => keyAction('Key purged.', `Purge ${key.name} for good?`,
          'Its material is erased; this cannot be undone (needs the KeyPurge role, 4 h after deletion).',
          async () => { await api('DELETE', `${path}/purge`); location.hash = '#/keys'; }),
      }, 'Purge'));
    }

    const [alL, aliasInput] = field('New alias', { id: 'new-alias' });
    const aliasForm = el('form', {
      class: 'toolbar',
      onsubmit: (ev) => {
        ev.preventDefault();
        const a = aliasInput.value.trim();
        if (a) act(`Alias ${a} added.`, () => api('POST', `${path}/aliases/${enc(a)}`));
      },
    }, el('div', {}, alL, aliasInput), el('button', { type: 'submit' }, 'Add alias'));

    // The key's rotation policy (and dual authorization, which cannot be turned off once set).
    const [prl, policyMonths] = field('Rotate every (months)', { type: 'number', min: 1, max: 12, id: 'key-rotation' });
    const policyForm = el('form', {
      class: 'toolbar', 'aria-label': 'Set key policies',
      onsubmit: (ev) => {
        ev.preventDefault();
        const n = Number(policyMonths.value);
        if (!n) return;
        act('Rotation policy saved.', () => api('PUT', `${path}/policies`, {
          query: { policy: 'rotation' },
          json: kp(POLICY_MEDIA, [{ type: POLICY_MEDIA, rotation: { enabled: true, interval_month: n } }]),
          media: POLICY_MEDIA,
        }));
      },
    }, el('div', {}, prl, policyMonths), el('button', { type: 'submit' }, 'Set rotation policy'),
    key.dualAuthDelete && key.dualAuthDelete.enabled ? '' : el('button', {
      type: 'button',
      onclick: async () => {
        if (await confirmDialog(`Require dual authorization to delete ${key.name}?`,
          el('p', {}, 'Once set, this policy cannot be turned off.'))) {
          await act('Dual authorization policy set.', () => api('PUT', `${path}/policies`, {
            query: { policy: 'dualAuthDelete' },
            json: kp(POLICY_MEDIA, [{ type: POLICY_MEDIA, dualAuthDelete: { enabled: true } }]),
            media: POLICY_MEDIA,
          }));
        }
      },
    }, 'Require dual authorization'));

    const policyRows = policies instanceof Error ? [] : (policies.resources || []).map((p) => [
      p.rotation ? 'Rotation' : 'Dual authorization',
      p.rotation ? `${p.rotation.enabled === false ? 'disabled' : 'enabled'}, every ${p.rotation.interval_month} month(s)`
        : `${p.dualAuthDelete && p.dualAuthDelete.enabled ? 'enabled' : 'disabled'}`,
      date(p.lastUpdateDate || p.creationDate)]);
    const versionRows = versions instanceof Error ? [] : (versions.resources || []).map((v) => [
      el('code', {}, v.id), date(v.creationDate)]);
    // Newest first; the console's own reads are hidden unless asked for.
    const events = audit instanceof Error ? [] : (audit.resources || []).slice().reverse();
    const READS = /\.(read|list|get)[a-z]*$/;
    const reads = check('Show reads', { id: 'key-audit-reads' });
    const auditSlot = el('div', {});
    const showEvents = () => auditSlot.replaceChildren(auditTable(
      reads.querySelector('input').checked ? events : events.filter((e) => !READS.test(e.action))));
    reads.querySelector('input').addEventListener('change', showEvents);
    showEvents();

    root.replaceChildren(
      el('p', {}, el('a', { href: '#/keys' }, '← Keys')),
      el('h1', {}, `Key ${key.name}`),
      el('div', { class: 'panel' },
        dl([['Id', el('code', {}, key.id)], ['State', stateLabel(key.state)], ['Type', keyType(key)],
          ['Key ring', key.keyRingID], ['Description', key.description], ['CRN', el('code', {}, key.crn)],
          ['Algorithm', `${key.algorithmType} ${key.algorithmBitSize || ''}`],
          ['Created', `${date(key.creationDate)} by ${key.createdBy}`],
          ['Last rotation', date(key.lastRotateDate)], ['Last update', date(key.lastUpdateDate)],
          ['Current version', key.keyVersion && el('code', {}, key.keyVersion.id)],
          ['Expires', date(key.expirationDate)],
          ['Dual authorization', key.dualAuthDelete && key.dualAuthDelete.enabled
            ? `enabled${key.dualAuthDelete.keySetForDeletion ? ', authorized for deletion' : ''}` : 'disabled'],
          ['Deleted', key.deleted ? `${date(key.deletionDate)} by ${key.deletedBy}` : null]])),
      el('h2', {}, 'Actions'),
      el('div', { class: 'actions', role: 'group', 'aria-label': 'Key actions' }, actions),
      el('h2', {}, 'Registrations (what this key protects)'),
      failed(regs),
      table(['Resource', 'Description', 'Prevents deletion', 'Version', 'Registered'],
        registrations.map((r) => [el('code', {}, r.resourceCrn), r.description || '',
          r.preventKeyDeletion ? 'yes' : 'no', r.keyVersion ? el('code', {}, r.keyVersion.id) : '',
          date(r.creationDate)]), 'No resource is registered on this key.'),
      el('div', { class: 'cols' },
        el('div', {},
          el('h2', {}, 'Aliases'),
          table(['Alias', ''], (key.aliases || []).map((a) => [a, el('button', {
            type: 'button',
            onclick: () => act(`Alias ${a} removed.`, () => api('DELETE', `${path}/aliases/${enc(a)}`)),
          }, `Remove alias ${a}`)]), 'No aliases.'),
          aliasForm,
          el('h2', {}, 'Policies'),
          failed(policies),
          table(['Policy', 'Setting', 'Updated'], policyRows, 'No key policies.'),
          policyForm),
        el('div', {},
          el('h2', {}, 'Versions'),
          failed(versions),
          table(['Version', 'Created'], versionRows, 'No versions.'))),
      el('h2', {}, 'Audit events of this key'),
      failed(audit),
      reads,
      auditSlot);
  }

  /** The newest `limit` events matching `filters` (the API lists oldest first). */
  async function newestEvents(filters, limit) {
    const head = await api('GET', '/api/v2/audit_events', { query: { ...filters, limit: 1 } });
    const offset = Math.max(0, (head.metadata.totalCount || 0) - limit);
    return api('GET', '/api/v2/audit_events', { query: { ...filters, limit, offset } });
  }

  function auditTable(events) {
    return table(['Time', 'Action', 'Outcome', 'Initiator', 'Target', 'State', 'Reason'],
      events.map((e) => [el('span', { class: 'nowrap' }, date(e.eventTime)),
        // An aggregated event (`[audit] aggregate_crypto`) stands for many requests.
        e.aggregated ? `${e.action} (\u00d7${e.aggregated.count} in ${e.aggregated.windowSeconds} s)` : e.action,
        el('span', { class: e.outcome === 'success' ? 'ok' : 'bad' }, e.outcome),
        `${e.initiator && e.initiator.id ? e.initiator.id : ''}${e.initiator && e.initiator.address ? ` (${e.initiator.address})` : ''}`,
        e.target && e.target.id ? el('code', { class: 'nowrap' }, e.target.id) : '',
        e.target && e.target.keyState !== undefined && e.target.keyState !== null ? (STATES[e.target.keyState] || e.target.keyState) : '',
        `${e.reasonCode || ''} ${e.reason || ''}`.trim()]), 'No events.');
  }

  // ---------------------------------------------------------------------------------------
  // Key rings and instance policies
  // ---------------------------------------------------------------------------------------

  async function viewRings(root) {
    const data = await api('GET', '/api/v2/key_rings');
    const rings = (data && data.resources) || [];
    const [l, input] = field('New key ring id', { id: 'new-ring', pattern: '[A-Za-z0-9-]{2,100}' });
    root.replaceChildren(
      el('h1', {}, 'Key rings'),
      table(['Id', 'Created', 'By', ''], rings.map((r) => [el('code', {}, r.id), date(r.creationDate),
        r.createdBy || '', r.id === 'default' ? '' : el('button', {
          type: 'button',
          onclick: async () => {
            if (await confirmDialog(`Delete key ring ${r.id}?`, el('p', {}, 'Only an empty ring (or one holding deleted keys only) can be deleted.'))) {
              await act(`Key ring ${r.id} deleted.`, () => api('DELETE', `/api/v2/key_rings/${enc(r.id)}`, { query: { force: 'true' } }));
            }
          },
        }, `Delete ${r.id}`)])),
      el('form', {
        class: 'toolbar',
        onsubmit: (ev) => {
          ev.preventDefault();
          const id = input.value.trim();
          if (id) act(`Key ring ${id} created.`, () => api('POST', `/api/v2/key_rings/${enc(id)}`));
        },
      }, el('div', {}, l, input), el('button', { type: 'submit' }, 'Create key ring')));
  }

  async function viewPolicies(root) {
    const data = await api('GET', '/api/v2/instance/policies');
    const rows = ((data && data.resources) || []).map((p) => {
      const { policy_type: type, policy_data: pdata, ...rest } = p;
      return [type || '', pdata ? el('code', {}, JSON.stringify(pdata)) : '',
        el('code', {}, JSON.stringify(rest))];
    });
    // The form starts from the policies in force, so saving changes only what was edited.
    const current = (type) => ((data && data.resources) || []).find((p) => p.policy_type === type);
    const rot = current('rotation');
    const dualNow = current('dualAuthDelete');
    const [rl, months] = field('Rotation every (months)', {
      type: 'number', min: 1, max: 12, id: 'inst-rotation',
      value: rot && rot.policy_data && rot.policy_data.enabled && rot.policy_data.attributes
        ? rot.policy_data.attributes.interval_month : null,
    });
    const dual = check('Dual authorization for new keys', {
      id: 'inst-dual', checked: Boolean(dualNow && dualNow.policy_data && dualNow.policy_data.enabled),
    });
    root.replaceChildren(
      el('h1', {}, 'Instance policies'),
      table(['Policy', 'Data', 'Details'], rows, 'No instance policies are set.'),
      el('form', {
        class: 'panel',
        'aria-label': 'Set instance policies',
        onsubmit: (ev) => {
          ev.preventDefault();
          const resources = [{ policy_type: 'dualAuthDelete', policy_data: { enabled: dual.querySelector('input').checked } }];
          if (months.value) {
            resources.push({ policy_type: 'rotation', policy_data: { enabled: true, attributes: { interval_month: Number(months.value) } } });
          }
          act('Instance policies saved.', () => api('PUT', '/api/v2/instance/policies', {
            json: kp(POLICY_MEDIA, resources), media: POLICY_MEDIA,
          }));
        },
      }, el('h2', {}, 'Set'), rl, months, dual,
      el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Save policies'))),
      el('p', { class: 'help' }, 'allowedIP, allowedNetwork, keyCreateImportAccess and metrics: keyward instance policy set (CLI) or PUT /api/v2/instance/policies.'));
  }

  // ---------------------------------------------------------------------------------------
  // Access: identities, API keys, access policies, service authorizations
  // ---------------------------------------------------------------------------------------

  async function viewAccess(root) {
    const soft = (p) => p.catch((err) => err);
    const [ids, keys, pols, auths] = await Promise.all([
      soft(api('GET', '/iam/v1/identities', { noInstance: true })),
      soft(api('GET', '/iam/v1/apikeys', { noInstance: true })),
      soft(api('GET', '/iam/v1/policies', { noInstance: true })),
      soft(api('GET', '/iam/v1/authorizations', { noInstance: true })),
    ]);
    const failed = (r) => (r instanceof Error ? el('p', { class: 'help' }, r.message) : '');
    const identities = ids instanceof Error ? [] : ids.identities;
    const idOptions = identities.map((i) => [i.iam_id, `${i.name} (${i.iam_id})`]);
    const iam = (path) => `/iam/v1/${path}`;

    // A new identity.
    const [nl, name] = field('Name', { id: 'new-identity-name', required: true });
    const [kl, kind] = select('Kind', [['user', 'User'], ['service', 'Service']], { id: 'new-identity-kind' });
    const [snl, serviceName] = field('Service name (services)', { id: 'new-identity-service' });
    const [sil, serviceInstance] = field('Service instance (services)', { id: 'new-identity-service-instance' });
    const identityForm = el('form', {
      class: 'panel', 'aria-label': 'New identity',
      onsubmit: (ev) => {
        ev.preventDefault();
        const body = { kind: kind.value, name: name.value.trim() };
        if (kind.value === 'service') { body.service_name = serviceName.value.trim(); body.service_instance = serviceInstance.value.trim(); }
        act(`Identity ${body.name} created.`, () => api('POST', iam('identities'), { json: body, noInstance: true }));
      },
    }, el('h3', {}, 'New identity'), nl, name, kl, kind, snl, serviceName, sil, serviceInstance,
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Create identity')));

    // A new API key: the secret is shown once, here, and never again.
    const [akl, akIdentity] = select('Identity', idOptions, { id: 'new-apikey-identity' });
    const [aknl, akName] = field('Name', { id: 'new-apikey-name', required: true });
    const secretSlot = el('div', { id: 'new-apikey-secret', 'aria-live': 'polite' });
    const apiKeyForm = el('form', {
      class: 'panel', 'aria-label': 'New API key',
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const created = await api('POST', iam('apikeys'), { json: { iam_id: akIdentity.value, name: akName.value.trim() }, noInstance: true });
          const out = el('output', { class: 'secret mono', id: 'apikey-secret' }, created.apikey);
          created.apikey = null;
          await route();
          const slot = $('new-apikey-secret');
          if (slot) {
            slot.replaceChildren(el('p', {}, `API key ${created.name} for ${created.iam_id}: copy it now, it is shown only once.`), out);
          }
          status('API key created.');
        } catch (err) { showError(err); }
      },
    }, el('h3', {}, 'New API key'), akl, akIdentity, aknl, akName,
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Create API key')), secretSlot);

    // A new access policy.
    const [psl, pSubject] = select('Subject', idOptions, { id: 'new-policy-subject' });
    const [prl, pRole] = select('Role', ROLES.map((r) => [r, r]), { id: 'new-policy-role' });
    const [pscl, pScope] = select('On', [['instance', 'This instance'], ['account', 'The account'], ['ring', 'A key ring'], ['key', 'A key']], { id: 'new-policy-scope' });
    const [ptl, pTarget] = field('Key ring or key id (for those scopes)', { id: 'new-policy-target' });
    const policyForm = el('form', {
      class: 'panel', 'aria-label': 'New access policy',
      onsubmit: (ev) => {
        ev.preventDefault();
        const resource = {};
        if (pScope.value !== 'account') resource.instance_id = session.instance;
        if (pScope.value === 'ring') resource.key_ring = pTarget.value.trim();
        if (pScope.value === 'key') resource.key_id = pTarget.value.trim();
        act('Access policy created.', () => api('POST', iam('policies'), {
          json: { subject: pSubject.value, roles: [pRole.value], resource }, noInstance: true,
        }));
      },
    }, el('h3', {}, 'New access policy'), psl, pSubject, prl, pRole, pscl, pScope, ptl, pTarget,
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Create access policy')));

    const [asl, aService] = field('Source service name', { id: 'new-auth-service', required: true });
    const [ail, aInstance] = field('Source service instance (empty: any)', { id: 'new-auth-instance' });
    const [arl, aRole] = select('Role', ROLES.slice(0, 4).map((r) => [r, r]), { id: 'new-auth-role' });
    const authForm = el('form', {
      class: 'panel', 'aria-label': 'New service authorization',
      onsubmit: (ev) => {
        ev.preventDefault();
        const source = { service_name: aService.value.trim() };
        if (aInstance.value.trim()) source.service_instance = aInstance.value.trim();
        act('Service authorization created.', () => api('POST', iam('authorizations'), {
          json: { source, target: { instance_id: session.instance }, roles: [aRole.value] }, noInstance: true,
        }));
      },
    }, el('h3', {}, 'New service authorization (on this instance)'), asl, aService, ail, aInstance, arl, aRole,
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Create service authorization')));

    const scope = (r) => (r.key_id ? `key ${r.key_id}` : r.key_ring ? `ring ${r.key_ring}` : r.instance_id ? `instance ${r.instance_id}` : 'account');
    const lockButton = (what, path, locked, label) => el('button', {
      type: 'button',
      onclick: () => act(`${label} ${locked ? 'unlocked' : 'locked'}.`, () => api(locked ? 'DELETE' : 'POST', `${path}/lock`, { noInstance: true })),
    }, `${locked ? 'Unlock' : 'Lock'} ${what}`);
    const deleteButton = (what, path, label) => el('button', {
      type: 'button', class: 'danger',
      onclick: async () => {
        if (await confirmDialog(`Delete ${what}?`, el('p', {}, 'This cannot be undone.'))) {
          await act(`${label} deleted.`, () => api('DELETE', path, { noInstance: true }));
        }
      },
    }, `Delete ${what}`);

    root.replaceChildren(
      el('h1', {}, 'Access'),
      el('h2', {}, 'Identities'), failed(ids),
      table(['Name', 'IAM id', 'Kind', 'Locked', 'Created', ''], identities.map((i) => [i.name, el('code', {}, i.iam_id),
        i.kind + (i.service_name ? ` (${i.service_name}/${i.service_instance})` : ''), i.locked ? 'yes' : 'no', date(i.created_at),
        el('span', { class: 'actions' }, lockButton(i.name, iam(`identities/${enc(i.iam_id)}`), i.locked, `Identity ${i.name}`),
          deleteButton(i.name, iam(`identities/${enc(i.iam_id)}`), `Identity ${i.name}`))])),
      el('h2', {}, 'API keys'), failed(keys),
      table(['Name', 'Id', 'Identity', 'Locked', 'Created', ''], (keys instanceof Error ? [] : keys.apikeys).map((k) => [k.name,
        el('code', {}, k.id), el('code', {}, k.iam_id), k.locked ? 'yes' : 'no', date(k.created_at),
        el('span', { class: 'actions' }, lockButton(`API key ${k.name}`, iam(`apikeys/${enc(k.id)}`), k.locked, `API key ${k.name}`),
          deleteButton(`API key ${k.name}`, iam(`apikeys/${enc(k.id)}`), `API key ${k.name}`))])),
      el('h2', {}, 'Access policies'), failed(pols),
      table(['Subject', 'Roles', 'On', 'Created', ''], (pols instanceof Error ? [] : pols.policies).map((p) => [
        el('code', {}, p.subject), p.roles.join(', '), scope(p.resource), date(p.created_at),
        deleteButton(`policy ${p.id}`, iam(`policies/${enc(p.id)}`), 'Access policy')])),
      el('h2', {}, 'Service authorizations'), failed(auths),
      table(['Source service', 'Roles', 'On', 'Delegation', 'Created', ''], (auths instanceof Error ? [] : auths.authorizations).map((a) => [
        `${a.source.service_name}${a.source.service_instance ? `/${a.source.service_instance}` : ''}`, a.roles.join(', '),
        scope(a.target), a.delegation ? `yes${a.dependents && a.dependents.length ? ` (${a.dependents.join(', ')})` : ''}` : 'no',
        date(a.created_at), deleteButton(`authorization ${a.id}`, iam(`authorizations/${enc(a.id)}`), 'Authorization')])),
      el('div', { class: 'cols' }, identityForm, apiKeyForm),
      el('div', { class: 'cols' }, policyForm, authForm));
  }

  // ---------------------------------------------------------------------------------------
  // KMIP
  // ---------------------------------------------------------------------------------------

  async function viewKmip(root) {
    const data = await api('GET', '/api/v2/kmip_adapters', { query: { limit: 200 } });
    const adapters = (data && data.resources) || [];
    const detail = el('div', { id: 'kmip-detail' });
    const showAdapter = async (a) => {
      try {
        const [certs, objects] = await Promise.all([
          api('GET', `/api/v2/kmip_adapters/${enc(a.id)}/certificates`, { query: { limit: 200 } }),
          api('GET', `/api/v2/kmip_adapters/${enc(a.id)}/kmip_objects`, { query: { limit: 200 } }),
        ]);
        const [cnl, certName] = field('Certificate name (optional)', { id: 'new-cert-name' });
        const [cpl, certPem] = field('Client certificate (PEM)', { tag: 'textarea', id: 'new-cert-pem', required: true });
        const certMedia = 'application/vnd.ibm.kms.kmip_client_certificate+json';
        const certForm = el('form', {
          class: 'panel', 'aria-label': 'Add a client certificate',
          onsubmit: async (ev) => {
            ev.preventDefault();
            const body = { certificate: certPem.value.trim() };
            if (certName.value.trim()) body.name = certName.value.trim();
            try {
              await api('POST', `/api/v2/kmip_adapters/${enc(a.id)}/certificates`, { json: kp(certMedia, [body]), media: certMedia });
              status('Client certificate added.');
              await showAdapter(a);
            } catch (err) { showError(err); }
          },
        }, el('h3', {}, `Add a client certificate to ${a.name}`), cnl, certName, cpl, certPem,
        el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Add certificate')));
        detail.replaceChildren(
          el('h2', {}, `Adapter ${a.name}: client certificates`),
          table(['Name', 'Id', 'Created', 'By'], (certs.resources || []).map((c) => [c.name, el('code', {}, c.id),
            date(c.created_at), c.created_by]), 'No certificates.'),
          el('h2', {}, `Adapter ${a.name}: KMIP objects`),
          table(['Id', 'Type', 'State', 'Created', 'Destroyed'], (objects.resources || []).map((o) => [el('code', {}, o.id),
            String(o.kmip_object_type), o.state === undefined || o.state === null ? '' : String(o.state), date(o.created_at),
            date(o.destroyed_at)]), 'No objects.'),
          certForm);
      } catch (err) { showError(err); }
    };
    const [cl, crk] = field('Root key id or alias', { id: 'new-adapter-crk', required: true });
    const [nl, name] = field('Name (optional)', { id: 'new-adapter-name' });
    root.replaceChildren(
      el('h1', {}, 'KMIP adapters'),
      table(['Name', 'Id', 'Profile', 'Root key', 'Created', ''], adapters.map((a) => [a.name, el('code', {}, a.id), a.profile,
        a.profile_data && a.profile_data.crk_id ? el('code', {}, a.profile_data.crk_id) : '', date(a.created_at),
        el('span', { class: 'actions' },
          el('button', { type: 'button', onclick: () => showAdapter(a) }, `Show ${a.name}`),
          el('button', {
            type: 'button', class: 'danger',
            onclick: async () => {
              if (await confirmDialog(`Delete KMIP adapter ${a.name}?`, el('p', {}, 'Its client certificates go with it; refused while it has Active objects.'))) {
                await act(`KMIP adapter ${a.name} deleted.`, () => api('DELETE', `/api/v2/kmip_adapters/${enc(a.id)}`));
              }
            },
          }, `Delete ${a.name}`))]), 'No KMIP adapters.'),
      detail,
      el('form', {
        class: 'panel', 'aria-label': 'New KMIP adapter',
        onsubmit: (ev) => {
          ev.preventDefault();
          const body = { profile: 'native_1.0', profile_data: { crk_id: crk.value.trim() } };
          if (name.value.trim()) body.name = name.value.trim();
          act('KMIP adapter created.', () => api('POST', '/api/v2/kmip_adapters', {
            json: kp('application/vnd.ibm.kms.kmip_adapter+json', [body]),
            media: 'application/vnd.ibm.kms.kmip_adapter+json',
          }));
        },
      }, el('h2', {}, 'New KMIP adapter'), cl, crk, nl, name,
      el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Create adapter'))));
  }

  // ---------------------------------------------------------------------------------------
  // Audit
  // ---------------------------------------------------------------------------------------

  const AUDIT_QUERY = { from: '', to: '', action: '', keyId: '', initiator: '', outcome: '', limit: 100, offset: null };
  const auditQuery = { ...AUDIT_QUERY };

  async function viewAudit(root) {
    const q = auditQuery;
    const toIso = (v) => (v ? new Date(v).toISOString() : undefined);
    const filters = {
      from: toIso(q.from), to: toIso(q.to), action: q.action || undefined, keyId: q.keyId || undefined,
      initiator: q.initiator || undefined, outcome: q.outcome || undefined,
    };
    // Newest first: the API lists oldest first, so the first page is read from the end.
    let offset = q.offset;
    if (offset === null) {
      const head = await api('GET', '/api/v2/audit_events', { query: { ...filters, limit: 1 } });
      const total = head.metadata.totalCount || 0;
      offset = Math.max(0, total - q.limit);
    }
    const [data, chain] = await Promise.all([
      api('GET', '/api/v2/audit_events', { query: { ...filters, limit: q.limit, offset } }),
      api('GET', '/api/v2/audit_events/verification').catch((err) => err),
    ]);
    const total = data.metadata.totalCount || 0;
    const events = (data.resources || []).slice().reverse();

    const [fl, from] = field('From', { type: 'datetime-local', value: q.from, id: 'audit-from' });
    const [tl, to] = field('To', { type: 'datetime-local', value: q.to, id: 'audit-to' });
    const [al, action] = field('Action', { value: q.action, id: 'audit-action', placeholder: 'kms.secrets.rotate' });
    const [kl, keyId] = field('Key id', { value: q.keyId, id: 'audit-key' });
    const [il, initiator] = field('Initiator', { value: q.initiator, id: 'audit-initiator' });
    const [ol, outcome] = select('Outcome', [['', 'Any'], ['success', 'Success'], ['failure', 'Failure']], { id: 'audit-outcome' });
    outcome.value = q.outcome;
    const page = (o) => { q.offset = o; route(); };
    const newestShown = offset + (data.resources || []).length;
    root.replaceChildren(
      el('h1', {}, 'Audit'),
      el('form', {
        class: 'toolbar', role: 'search',
        onsubmit: (ev) => {
          ev.preventDefault();
          Object.assign(q, {
            from: from.value, to: to.value, action: action.value.trim(), keyId: keyId.value.trim(),
            initiator: initiator.value.trim(), outcome: outcome.value, offset: null,
          });
          route();
        },
      }, el('div', {}, fl, from), el('div', {}, tl, to), el('div', {}, al, action), el('div', {}, kl, keyId),
      el('div', {}, il, initiator), el('div', {}, ol, outcome), el('button', { type: 'submit' }, 'Filter')),
      chainPanel(chain),
      el('div', { class: 'pager' },
        el('button', { type: 'button', disabled: newestShown >= total, onclick: () => page(null) }, 'Newest'),
        el('button', { type: 'button', disabled: newestShown >= total, onclick: () => page(Math.min(total, offset + q.limit)) }, 'Newer'),
        el('span', {}, `${total ? offset + 1 : 0}–${newestShown} of ${total}`),
        el('button', { type: 'button', disabled: offset === 0, onclick: () => page(Math.max(0, offset - q.limit)) }, 'Older')),
      auditTable(events));
  }

  /** The chain verification: the newest signed checkpoint and the events after it. */
  function chainPanel(v) {
    if (v instanceof Error) return el('p', { class: 'help' }, `Chain verification: ${v.message}`);
    const cp = v.checkpoint;
    const result = v.ok
      ? el('span', { class: 'ok', id: 'chain-result' }, `intact${v.complete ? '' : ' so far (the walk stops at a bound; run keyward audit verify)'}`)
      : el('span', { class: 'bad', id: 'chain-result' },
        `BROKEN at seq ${v.firstBreak.seq} (${v.firstBreak.kind}): ${v.firstBreak.detail}`);
    return el('div', { class: 'panel', role: 'region', 'aria-label': 'Audit chain verification' },
      el('h2', {}, 'Audit chain'),
      dl([['Result', result],
        ['Head', v.headSeq ? el('span', {}, `seq ${v.headSeq} `, el('code', {}, v.headHash)) : 'empty trail'],
        ['Newest signed checkpoint', cp
          ? el('span', {}, `seq ${cp.seq} at ${date(cp.time)}, `, el('span', { class: cp.valid ? 'ok' : 'bad' }, cp.valid ? 'signature valid' : 'INVALID'))
          : 'none yet'],
        ['Verified', `${v.eventsChecked} event(s) from seq ${v.verifiedFrom}`]]),
      el('p', { class: 'help' }, 'Events before the checkpoint are vouched for by its signature; ',
        el('code', {}, 'keyward audit verify'), ' walks the whole chain.'));
  }

  // ---------------------------------------------------------------------------------------
  // Health
  // ---------------------------------------------------------------------------------------

  async function viewHealth(root) {
    const healthz = await fetch('/healthz', { cache: 'no-store', credentials: 'omit' })
      .then((r) => (r.ok ? 'ok' : `HTTP ${r.status}`)).catch((e) => `unreachable (${e.message})`);
    const resp = await fetch('/metrics', { cache: 'no-store', credentials: 'omit' }).catch(() => null);
    const rows = [];
    let note = '';
    if (resp && resp.ok) {
      const text = await resp.text();
      const metric = (name) => text.split('\n').filter((l) => l.startsWith(name) && !l.startsWith('#'));
      const value = (line) => line.slice(line.lastIndexOf(' ') + 1);
      const up = metric('keyward_custody_up')[0];
      const info = metric('keyward_custody_info{')[0];
      const backend = info ? (info.match(/backend="([^"]*)"/) || [])[1] : null;
      rows.push(['Custody backend', el('span', {}, backend ? `${backend}: ` : '',
        up ? (value(up) === '1' ? el('span', { class: 'ok' }, 'up (signs records)') : el('span', { class: 'bad' }, 'DOWN')) : 'unknown')]);
      for (const l of metric('keyward_custody_token_up{')) {
        const token = (l.match(/token="([^"]*)"/) || [])[1] || '?';
        rows.push([`HSM token ${token}`, value(l) === '1' ? el('span', { class: 'ok' }, 'usable')
          : el('span', { class: 'bad' }, 'FAILED (skipped until it answers again)')]);
      }
      const head = metric('keyward_audit_chain_head_seq')[0];
      rows.push(['Audit chain head', head ? value(head) : 'unknown']);
      const backlog = metric('keyward_event_delivery_backlog')[0];
      rows.push(['Event delivery backlog', backlog ? `${value(backlog)} event(s)` : 'unknown']);
      for (const l of metric('keyward_audit_export_lag_events')) rows.push([`Audit export lag ${l.slice(l.indexOf('{'), l.indexOf('}') + 1)}`, `${value(l)} event(s)`]);
      for (const l of metric('keyward_keys{')) rows.push([`Keys ${l.slice(l.indexOf('{'), l.indexOf('}') + 1)}`, value(l)]);
    } else {
      note = el('p', { class: 'help' }, `/metrics is not readable from the console (${resp ? `HTTP ${resp.status}` : 'unreachable'}): it may be disabled or need its bearer token.`);
    }
    root.replaceChildren(
      el('h1', {}, 'Health'),
      el('div', { class: 'panel' }, dl([['Server', healthz], ...rows])),
      note,
      el('p', { class: 'help' }, 'From /healthz and /metrics, read at this moment.'));
  }

  // ---------------------------------------------------------------------------------------
  // Start
  // ---------------------------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    $('signin-form').addEventListener('submit', signIn);
    $('signout').addEventListener('click', signOut);
    window.addEventListener('hashchange', route);
    $('apikey').focus();
  });
})();
