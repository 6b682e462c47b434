"""In-process stand-in for Swift's memcache middleware (test fixture only).

Swift's `cache` filter needs a memcached reachable over TCP (it has no
unix-socket support). tempauth cannot work without a cache, and authtoken
and the proxy's account/container info caching use it too. The fixture may
not open a memcached port, so the proxy (which runs exactly ONE worker
process, see proxy-server.conf) gets this object as env['swift.cache'].

It has the MemcacheRing methods those callers use, with memcached's
semantics: values JSON-serialised by default, TTL 0 = never expires,
TTL > 30 days = absolute Unix time, incr/decr clamp at 0.
"""
import json
import threading
import time

_THIRTY_DAYS = 30 * 24 * 3600
_MAX_ITEMS = 200000


class InProcessMemcache(object):
    def __init__(self):
        self._data = {}   # key -> (raw bytes, serialised?, expiry or None)
        self._lock = threading.Lock()

    @staticmethod
    def _key(key):
        return key.decode('utf-8') if isinstance(key, bytes) else str(key)

    @staticmethod
    def _expiry(ttl):
        ttl = int(ttl or 0)
        if ttl == 0:
            return None
        if ttl < 0:
            return 0.0                     # already expired
        if ttl > _THIRTY_DAYS:
            return float(ttl)              # absolute time, as memcached does
        return time.time() + ttl

    def _put(self, key, raw, serialised, expiry):
        if len(self._data) >= _MAX_ITEMS:  # bound memory: drop expired, else all
            now = time.time()
            for k in [k for k, v in self._data.items()
                      if v[2] is not None and v[2] <= now]:
                del self._data[k]
            if len(self._data) >= _MAX_ITEMS:
                self._data.clear()
        self._data[key] = (raw, serialised, expiry)

    def _get(self, key):
        item = self._data.get(key)
        if item is not None and item[2] is not None and item[2] <= time.time():
            del self._data[key]
            return None
        return item

    def set(self, key, value, serialize=True, time=0, min_compress_len=0,
            raise_on_error=False):
        if serialize:
            if isinstance(value, bytes):
                value = value.decode('utf-8')
            raw = json.dumps(value).encode('ascii')
        else:
            raw = value if isinstance(value, bytes) else str(value).encode('utf-8')
        with self._lock:
            self._put(self._key(key), raw, bool(serialize), self._expiry(time))

    def get(self, key, raise_on_error=False):
        with self._lock:
            item = self._get(self._key(key))
        if item is None:
            return None
        return json.loads(item[0]) if item[1] else item[0]

    def incr(self, key, delta=1, time=0):
        k = self._key(key)
        with self._lock:
            item = self._get(k)
            if item is None:
                new, expiry = max(int(delta), 0), self._expiry(time)
            else:
                new, expiry = max(int(item[0]) + int(delta), 0), item[2]
            self._put(k, str(new).encode('ascii'), False, expiry)
            return new

    def decr(self, key, delta=1, time=0):
        return self.incr(key, delta=-int(delta), time=time)

    def delete(self, key, server_key=None):
        with self._lock:
            self._data.pop(self._key(key), None)

    def set_multi(self, mapping, server_key, serialize=True, time=0,
                  min_compress_len=0):
        for key, value in mapping.items():
            self.set(key, value, serialize=serialize, time=time)

    def get_multi(self, keys, server_key):
        return [self.get(key) for key in keys]


def filter_factory(global_conf, **local_conf):
    cache = InProcessMemcache()

    def cache_filter(app):
        def middleware(env, start_response):
            env['swift.cache'] = cache
            return app(env, start_response)
        return middleware
    return cache_filter
