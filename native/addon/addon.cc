// N-API glue only: converts JS values to TensorRefs, calls runtime and ops, turns Status into JS
// exceptions (with `code`, e.g. "E_SHAPE"). C++ exceptions never cross into Node: every entry point
// catches. Blocking work (synchronize, device-to-host copies) runs in AsyncWorkers.
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "ops/collective.h"
#include "ops/ops.h"
#include "runtime/device.h"
#include "runtime/fault.h"
#include "runtime/threadpool.h"

namespace gemma3 {
namespace {

Napi::Error status_error(Napi::Env env, const Status& st) {
  Napi::Error e = Napi::Error::New(env, st.message);
  e.Set("code", Napi::String::New(env, status_code_name(st.code)));
  return e;
}

void throw_if(Napi::Env env, const Status& st) {
  if (!st.ok()) throw status_error(env, st);
}

Status arg_error(const std::string& msg) { return Status(StatusCode::kInvalidArgument, msg); }

int64_t to_i64(const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) throw arg_error(std::string(what) + " must be a number").message;
  return v.As<Napi::Number>().Int64Value();
}

// ---- NativeBuffer: a JS handle on a shared_ptr<Buffer> ----
class NativeBuffer : public Napi::ObjectWrap<NativeBuffer> {
 public:
  static Napi::FunctionReference* ctor;
  static Napi::Function Init(Napi::Env env) {
    Napi::Function f = DefineClass(env, "NativeBuffer",
                                   {InstanceAccessor<&NativeBuffer::ByteLength>("byteLength"),
                                    InstanceAccessor<&NativeBuffer::Device>("device"),
                                    InstanceAccessor<&NativeBuffer::Freed>("freed"),
                                    InstanceMethod<&NativeBuffer::Free>("free")});
    ctor = new Napi::FunctionReference(Napi::Persistent(f));
    return f;
  }
  explicit NativeBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeBuffer>(info) {}

  std::shared_ptr<Buffer> buf;
  int64_t bytes = 0;
  int device = kCpu;

 private:
  Napi::Value ByteLength(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), double(bytes));
  }
  Napi::Value Device(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), device);
  }
  Napi::Value Freed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !buf); }
  void Free(const Napi::CallbackInfo&) { buf.reset(); }
};
Napi::FunctionReference* NativeBuffer::ctor = nullptr;

std::shared_ptr<Buffer> unwrap_buffer(const Napi::Value& v, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(NativeBuffer::ctor->Value()))
    throw arg_error(std::string(what) + " is not a NativeBuffer");
  NativeBuffer* nb = NativeBuffer::Unwrap(v.As<Napi::Object>());
  if (!nb->buf) throw Status(StatusCode::kDisposed, std::string(what) + " was disposed");
  return nb->buf;
}

// A JS tensor: { storage: NativeBuffer, byteOffset: number, dtype: number, shape: number[] }.
TensorRef to_tensor(const Napi::Value& v, const char* what) {
  if (!v.IsObject()) throw arg_error(std::string(what) + " must be a Tensor");
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value shape_v = o.Get("shape");
  if (!shape_v.IsArray()) throw arg_error(std::string(what) + ".shape must be an array");
  Napi::Array arr = shape_v.As<Napi::Array>();
  std::vector<int64_t> shape(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); ++i) shape[i] = to_i64(arr.Get(i), "shape entry");
  TensorRef t;
  Status st = make_tensor_ref(unwrap_buffer(o.Get("storage"), what),
                              to_i64(o.Get("byteOffset"), "byteOffset"),
                              DType(int(to_i64(o.Get("dtype"), "dtype"))), std::move(shape), &t);
  if (!st.ok()) throw Status(st.code, std::string(what) + ": " + st.message);
  return t;
}

// Optional tensor: null/undefined -> nullptr.
struct OptTensor {
  TensorRef t;
  bool has = false;
  const TensorRef* get() const { return has ? &t : nullptr; }
};
OptTensor to_opt_tensor(const Napi::Value& v, const char* what) {
  OptTensor o;
  if (!v.IsNull() && !v.IsUndefined()) {
    o.t = to_tensor(v, what);
    o.has = true;
  }
  return o;
}

// Wraps an entry point: Status thrown as value or returned → JS error; other C++ exceptions too.
template <class F>
Napi::Value guarded(const Napi::CallbackInfo& info, F&& f) {
  Napi::Env env = info.Env();
  try {
    return f(env);
  } catch (const Napi::Error&) {
    throw;
  } catch (const Status& st) {
    throw status_error(env, st);
  } catch (const std::string& msg) {
    throw status_error(env, Status(StatusCode::kInvalidArgument, msg));
  } catch (const std::bad_alloc&) {
    throw status_error(env, Status(StatusCode::kOutOfMemory, "host allocation failed"));
  } catch (const std::exception& e) {
    throw status_error(env, Status(StatusCode::kInternal, e.what()));
  }
}

#define G3_ENTRY(name) Napi::Value name(const Napi::CallbackInfo& info)
#define G3_BODY return guarded(info, [&](Napi::Env env) -> Napi::Value
#define G3_END );

// ---- async: a worker that runs a Status-returning function off the JS thread ----
class StatusWorker : public Napi::AsyncWorker {
 public:
  StatusWorker(Napi::Env env, std::function<Status()> fn, Napi::Reference<Napi::Value> keep)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        fn_(std::move(fn)),
        keep_(std::move(keep)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      st_ = fn_();
    } catch (const std::exception& e) {
      st_ = Status(StatusCode::kInternal, e.what());
    }
  }
  void OnOK() override {
    if (st_.ok()) {
      deferred_.Resolve(Env().Undefined());
    } else {
      deferred_.Reject(status_error(Env(), st_).Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<Status()> fn_;
  Status st_;
  Napi::Reference<Napi::Value> keep_;
};

Napi::Value run_async(Napi::Env env, std::function<Status()> fn, Napi::Value keep) {
  Napi::Reference<Napi::Value> ref;
  if (!keep.IsUndefined()) ref = Napi::Persistent(keep);
  auto* w = new StatusWorker(env, std::move(fn), std::move(ref));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// ---- devices ----
G3_ENTRY(BuildInfo){G3_BODY{Napi::Object o = Napi::Object::New(env);
o.Set("cuda", cuda_built());
o.Set("cpuThreads", num_threads());
#ifdef GEMMA3_WITH_CUBLAS
o.Set("cublas", true);
#else
o.Set("cublas", false);
#endif
#ifdef GEMMA3_WITH_NCCL
o.Set("nccl", true);
#else
o.Set("nccl", false);
#endif
return o;
}  // namespace
G3_END
}  // namespace gemma3

G3_ENTRY(DeviceCount){G3_BODY{return Napi::Number::New(env, cuda_device_count());
}
G3_END
}

G3_ENTRY(DeviceInfoJs){G3_BODY{DeviceInfo d;
throw_if(env, device_info(int(to_i64(info[0], "device")), &d));
Napi::Object o = Napi::Object::New(env);
o.Set("name", d.name);
o.Set("totalMemory", double(d.total_memory));
o.Set("smCount", d.sm_count);
o.Set("computeCapability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor));
o.Set("l2Bytes", double(d.l2_bytes));
return o;
}
G3_END
}

G3_ENTRY(MemoryInfo){G3_BODY{int64_t f = 0, t = 0;
throw_if(env, memory_info(int(to_i64(info[0], "device")), &f, &t));
Napi::Object o = Napi::Object::New(env);
o.Set("free", double(f));
o.Set("total", double(t));
return o;
}
G3_END
}

G3_ENTRY(Alloc){G3_BODY{int device = int(to_i64(info[0], "device"));
int64_t bytes = to_i64(info[1], "bytes");
std::shared_ptr<Buffer> b;
throw_if(env, Buffer::create(device, bytes, &b));
Napi::Object o = NativeBuffer::ctor->New({});
NativeBuffer* nb = NativeBuffer::Unwrap(o);
nb->buf = std::move(b);
nb->bytes = bytes;
nb->device = device;
return o;
}
G3_END
}

std::pair<char*, int64_t> typed_bytes(const Napi::Value& v) {
  if (!v.IsTypedArray()) throw arg_error("expected a TypedArray");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  char* p = static_cast<char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  return {p, int64_t(ta.ByteLength())};
}

G3_ENTRY(CopyFromHost){G3_BODY{auto buf = unwrap_buffer(info[0], "dst");
auto [p, n] = typed_bytes(info[2]);
throw_if(env, copy_from_host(buf, to_i64(info[1], "offset"), p, n));
return env.Undefined();
}
G3_END
}

G3_ENTRY(CopyToHost){G3_BODY{auto buf = unwrap_buffer(info[0], "src");
int64_t off = to_i64(info[1], "offset");
auto [p, n] = typed_bytes(info[2]);
return run_async(
    env, [buf, off, p = p, n = n] { return copy_to_host(buf, off, p, n); }, info[2]);
}
G3_END
}

G3_ENTRY(CopyBuffer){
    G3_BODY{throw_if(env, copy_buffer(unwrap_buffer(info[0], "dst"), to_i64(info[1], "dstOffset"),
                                      unwrap_buffer(info[2], "src"), to_i64(info[3], "srcOffset"),
                                      to_i64(info[4], "bytes")));
return env.Undefined();
}
G3_END
}

G3_ENTRY(Fill){
    G3_BODY{throw_if(env, fill_bytes(unwrap_buffer(info[0], "dst"), to_i64(info[1], "offset"),
                                     to_i64(info[2], "bytes"), uint8_t(to_i64(info[3], "value"))));
return env.Undefined();
}
G3_END
}

G3_ENTRY(Synchronize){G3_BODY{int device = int(to_i64(info[0], "device"));
throw_if(env, check_device(device));
return run_async(
    env, [device] { return synchronize(device); }, env.Undefined());
}
G3_END
}

// Test hook (GEMMA3_FAULT_INJECTION=1 only): injectFault(kind, device, after), see runtime/fault.h.
G3_ENTRY(InjectFault) {
  G3_BODY {
    if (!info[0].IsString()) throw_if(env, Status(StatusCode::kInvalidArgument, "kind: a string"));
    throw_if(env, fault::inject(info[0].As<Napi::String>().Utf8Value(),
                                int(to_i64(info[1], "device")), to_i64(info[2], "after")));
    return env.Undefined();
  }
  G3_END
}

// ---- graphs ----
class NativeGraph : public Napi::ObjectWrap<NativeGraph> {
 public:
  static Napi::FunctionReference* ctor;
  static Napi::Function Init(Napi::Env env) {
    Napi::Function f = DefineClass(env, "NativeGraph",
                                   {InstanceMethod<&NativeGraph::Launch>("launch"),
                                    InstanceMethod<&NativeGraph::Dispose>("dispose"),
                                    InstanceAccessor<&NativeGraph::Nodes>("nodes")});
    ctor = new Napi::FunctionReference(Napi::Persistent(f));
    return f;
  }
  explicit NativeGraph(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeGraph>(info) {}
  std::unique_ptr<Graph> graph;

 private:
  Napi::Value Launch(const Napi::CallbackInfo& info) {
    G3_BODY {
      if (!graph) throw Status(StatusCode::kDisposed, "graph was disposed");
      throw_if(env, graph->launch());
      return env.Undefined();
    }
    G3_END
  }
  void Dispose(const Napi::CallbackInfo&) { graph.reset(); }
  Napi::Value Nodes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), graph ? double(graph->num_nodes()) : 0.0);
  }
};
Napi::FunctionReference* NativeGraph::ctor = nullptr;

// ---- host readbacks (runtime/device.h HostReadback) ----
class NativeReadback : public Napi::ObjectWrap<NativeReadback> {
 public:
  static Napi::FunctionReference* ctor;
  static Napi::Function Init(Napi::Env env) {
    Napi::Function f = DefineClass(env, "NativeReadback",
                                   {InstanceMethod<&NativeReadback::Enqueue>("enqueue"),
                                    InstanceMethod<&NativeReadback::Wait>("wait"),
                                    InstanceMethod<&NativeReadback::Dispose>("dispose")});
    ctor = new Napi::FunctionReference(Napi::Persistent(f));
    return f;
  }
  explicit NativeReadback(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<NativeReadback>(info) {}
  // Shared with a wait in flight, which may outlive dispose().
  std::shared_ptr<HostReadback> rb;

 private:
  std::shared_ptr<HostReadback> get() {
    if (!rb) throw Status(StatusCode::kDisposed, "readback was disposed");
    return rb;
  }
  // (src: NativeBuffer, offset, bytes)
  Napi::Value Enqueue(const Napi::CallbackInfo& info){
      G3_BODY{throw_if(env, get()->enqueue(unwrap_buffer(info[0], "src"), to_i64(info[1], "offset"),
                                           to_i64(info[2], "bytes")));
  return env.Undefined();
} G3_END
}
// (dst: TypedArray) → Promise<void>
Napi::Value Wait(const Napi::CallbackInfo& info) {
  G3_BODY {
    auto r = get();
    auto [p, n] = typed_bytes(info[0]);
    return run_async(
        env, [r, p = p, n = n] { return r->wait(p, n); }, info[0]);
  }
  G3_END
}
void Dispose(const Napi::CallbackInfo&) { rb.reset(); }
}
;
Napi::FunctionReference* NativeReadback::ctor = nullptr;

// (device, capacityBytes)
G3_ENTRY(ReadbackCreate){G3_BODY{std::unique_ptr<HostReadback> r;
throw_if(env,
         HostReadback::create(int(to_i64(info[0], "device")), to_i64(info[1], "capacity"), &r));
Napi::Object o = NativeReadback::ctor->New({});
NativeReadback::Unwrap(o)->rb = std::move(r);
return o;
}
G3_END
}

G3_ENTRY(GraphBegin){G3_BODY{throw_if(env, graph_begin_capture(int(to_i64(info[0], "device"))));
return env.Undefined();
}
G3_END
}

G3_ENTRY(GraphEnd){G3_BODY{std::unique_ptr<Graph> g;
throw_if(env, graph_end_capture(int(to_i64(info[0], "device")), &g));
Napi::Object o = NativeGraph::ctor->New({});
NativeGraph::Unwrap(o)->graph = std::move(g);
return o;
}
G3_END
}

// ---- ops ----
Napi::Object to_obj(const Napi::Value& v, const char* what) {
  if (!v.IsObject()) throw arg_error(std::string(what) + " must be an object").message;
  return v.As<Napi::Object>();
}

float to_f32(const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) throw arg_error(std::string(what) + " must be a number");
  return v.As<Napi::Number>().FloatValue();
}

#define T(i, name) to_tensor(info[i], name)
#define OPT(i, name) to_opt_tensor(info[i], name)
#define OP_RESULT(expr)  \
  throw_if(env, (expr)); \
  return env.Undefined();

G3_ENTRY(Matmul){G3_BODY{auto s = OPT(2, "w_scale");
OP_RESULT(ops::matmul(T(0, "x"), T(1, "w"), s.get(), T(3, "y")));
}
G3_END
}
G3_ENTRY(RmsNorm){
    G3_BODY{OP_RESULT(ops::rmsnorm(T(0, "x"), T(1, "w"), T(2, "out"), to_f32(info[3], "eps")));
}
G3_END
}
G3_ENTRY(RmsNormAdd){G3_BODY{
    OP_RESULT(ops::rmsnorm_add(T(0, "x"), T(1, "w"), T(2, "residual"), to_f32(info[3], "eps")));
}
G3_END
}
G3_ENTRY(LayerNorm){G3_BODY{
    OP_RESULT(ops::layernorm(T(0, "x"), T(1, "w"), T(2, "b"), T(3, "out"), to_f32(info[4], "eps")));
}
G3_END
}
// (gate, up|null, out, x?, w?, w_scale?): with x and w, gate = matmul(x, w) first (ops.h).
G3_ENTRY(GeluMul){G3_BODY{auto up = OPT(1, "up");
auto x = OPT(3, "x");
auto w = OPT(4, "w");
auto s = OPT(5, "w_scale");
OP_RESULT(ops::gelu_mul(T(0, "gate"), up.get(), T(2, "out"), x.get(), w.get(), s.get()));
}
G3_END
}
G3_ENTRY(Add){G3_BODY{OP_RESULT(ops::add(T(0, "a"), T(1, "b"), T(2, "out")));
}
G3_END
}
G3_ENTRY(Scale){G3_BODY{OP_RESULT(ops::scale(T(0, "x"), T(1, "out"), to_f32(info[2], "s")));
}
G3_END
}
G3_ENTRY(Embedding){G3_BODY{
    OP_RESULT(ops::embedding(T(0, "ids"), T(1, "table"), T(2, "out"), to_f32(info[3], "scale")));
}
G3_END
}
G3_ENTRY(Softmax){G3_BODY{OP_RESULT(ops::softmax(T(0, "x"), T(1, "out")));
}
G3_END
}
G3_ENTRY(Argmax){G3_BODY{OP_RESULT(ops::argmax(T(0, "x"), T(1, "out")));
}
G3_END
}
G3_ENTRY(Topk){G3_BODY{OP_RESULT(ops::topk(T(0, "x"), T(1, "values"), T(2, "indices")));
}
G3_END
}
G3_ENTRY(Rope){G3_BODY{OP_RESULT(ops::rope(T(0, "x"), T(1, "positions"), to_f32(info[2], "base"),
                                           to_f32(info[3], "scale")));
}
G3_END
}
// (qkv|null, q, k, v|null, q_w, k_w, positions, eps, base, scale, kv_rows|null, x|null, w|null)
G3_ENTRY(QkNormRope){G3_BODY{auto qkv = OPT(0, "qkv");
auto v = OPT(3, "v");
auto kv_rows = OPT(10, "kv_rows");
auto x = OPT(11, "x");
auto w = OPT(12, "w");
OP_RESULT(ops::qk_norm_rope(qkv.get(), T(1, "q"), T(2, "k"), v.get(), T(4, "q_w"), T(5, "k_w"),
                            T(6, "positions"), to_f32(info[7], "eps"), to_f32(info[8], "base"),
                            to_f32(info[9], "scale"), kv_rows.get(), x.get(), w.get()));
}
G3_END
}
G3_ENTRY(RmsNormAddRmsNorm){G3_BODY{
    OP_RESULT(ops::rmsnorm_add_rmsnorm(T(0, "x"), T(1, "w"), T(2, "residual"), T(3, "w_next"),
                                       T(4, "out"), to_f32(info[5], "eps")));
}
G3_END
}
// attentionDecode's params object: {maxKvLen, smScale, window, kScale?, vScale?}.
ops::DecodeParams decode_params(const Napi::Object& o) {
  ops::DecodeParams p;
  p.max_kv_len = to_i64(o.Get("maxKvLen"), "maxKvLen");
  p.sm_scale = to_f32(o.Get("smScale"), "smScale");
  p.window = int32_t(to_i64(o.Get("window"), "window"));
  if (!o.Get("kScale").IsUndefined()) p.k_scale = to_f32(o.Get("kScale"), "kScale");
  if (!o.Get("vScale").IsUndefined()) p.v_scale = to_f32(o.Get("vScale"), "vScale");
  return p;
}
// (q, k, v, out, qo_indptr, kv_indptr, kv_last|null, {maxQLen, smScale, window, causal})
G3_ENTRY(AttentionPrefill){G3_BODY{auto last = OPT(6, "kv_last");
Napi::Object o = to_obj(info[7], "params");
ops::PrefillParams p;
p.max_q_len = to_i64(o.Get("maxQLen"), "maxQLen");
p.sm_scale = to_f32(o.Get("smScale"), "smScale");
p.window = int32_t(to_i64(o.Get("window"), "window"));
p.causal = o.Get("causal").ToBoolean();
OP_RESULT(ops::attention_prefill(T(0, "q"), T(1, "k"), T(2, "v"), T(3, "out"), T(4, "qo_indptr"),
                                 T(5, "kv_indptr"), last.get(), p));
}
G3_END
}
// (q, k_cache, v_cache, out, kv_indptr, kv_indices, kv_len, workspace|null, {maxKvLen, smScale,
// window, kScale?, vScale?})
G3_ENTRY(AttentionDecode){G3_BODY{auto ws = OPT(7, "workspace");
const Napi::Object o = to_obj(info[8], "params");
OP_RESULT(ops::attention_decode(T(0, "q"), T(1, "k_cache"), T(2, "v_cache"), T(3, "out"),
                                T(4, "kv_indptr"), T(5, "kv_indices"), T(6, "kv_len"), ws.get(),
                                decode_params(o)));
}
G3_END
}
// (qkv, q, q_w, k_w, positions, kv_rows, k_cache, v_cache, out, kv_indptr, kv_indices, kv_len,
// workspace|null, {maxKvLen, smScale, window, eps, base, ropeScale})
G3_ENTRY(AttentionDecodeQkv){G3_BODY{auto ws = OPT(12, "workspace");
const Napi::Object o = to_obj(info[13], "params");
OP_RESULT(ops::attention_decode_qkv(
    T(0, "qkv"), T(1, "q"), T(2, "q_w"), T(3, "k_w"), T(4, "positions"), T(5, "kv_rows"),
    to_f32(o.Get("eps"), "eps"), to_f32(o.Get("base"), "base"),
    to_f32(o.Get("ropeScale"), "ropeScale"), T(6, "k_cache"), T(7, "v_cache"), T(8, "out"),
    T(9, "kv_indptr"), T(10, "kv_indices"), T(11, "kv_len"), ws.get(), decode_params(o)));
}
G3_END
}
G3_ENTRY(AttentionDecodeWorkspaceFloats){G3_BODY{
    return Napi::Number::New(env, double(ops::attention_decode_workspace_floats(
                                      int(to_i64(info[0], "device")), to_i64(info[1], "batch"),
                                      to_i64(info[2], "numQoHeads"), to_i64(info[3], "headDim"),
                                      to_i64(info[4], "maxKvLen"))));
}
G3_END
}
// (x, bias, residual|null, out, gelu)
G3_ENTRY(BiasAdd){G3_BODY{auto r = OPT(2, "residual");
OP_RESULT(ops::bias_add(T(0, "x"), T(1, "bias"), r.get(), T(3, "out"), info[4].ToBoolean()));
}
G3_END
}
// (qkv, out, qo_indptr, kv_indptr, numQoHeads, numKvHeads, {maxQLen, smScale, window, causal})
G3_ENTRY(AttentionPrefillQkv){G3_BODY{Napi::Object o = to_obj(info[6], "params");
ops::PrefillParams p;
p.max_q_len = to_i64(o.Get("maxQLen"), "maxQLen");
p.sm_scale = to_f32(o.Get("smScale"), "smScale");
p.window = int32_t(to_i64(o.Get("window"), "window"));
p.causal = o.Get("causal").ToBoolean();
OP_RESULT(ops::attention_prefill_qkv(T(0, "qkv"), T(1, "out"), T(2, "qo_indptr"), T(3, "kv_indptr"),
                                     to_i64(info[4], "numQoHeads"), to_i64(info[5], "numKvHeads"),
                                     p));
}
G3_END
}
G3_ENTRY(Patchify){
    G3_BODY{OP_RESULT(ops::patchify(T(0, "pixels"), T(1, "out"), to_i64(info[2], "patch")));
}
G3_END
}
G3_ENTRY(AvgPool2d){
    G3_BODY{OP_RESULT(ops::avg_pool2d(T(0, "x"), T(1, "out"), to_i64(info[2], "k")));
}
G3_END
}
G3_ENTRY(Cast){G3_BODY{OP_RESULT(ops::cast(T(0, "src"), T(1, "dst")));
}
G3_END
}
G3_ENTRY(Quantize){G3_BODY{auto s = OPT(2, "scale");
OP_RESULT(ops::quantize(T(0, "src"), T(1, "dst"), s.get()));
}
G3_END
}
G3_ENTRY(Dequantize){G3_BODY{auto s = OPT(1, "scale");
OP_RESULT(ops::dequantize(T(0, "src"), s.get(), T(2, "dst")));
}
G3_END
}
G3_ENTRY(Repack){G3_BODY{OP_RESULT(ops::repack(T(0, "src"), T(1, "dst")));
}
G3_END
}
G3_ENTRY(CopyRows) {
  G3_BODY { OP_RESULT(ops::copy_rows(T(0, "src"), T(1, "dst"), T(2, "dst_rows"))); }
  G3_END
}

// ---- collectives (tensor parallelism): ops/collective.h ----
class NativeCommunicator : public Napi::ObjectWrap<NativeCommunicator> {
 public:
  static Napi::FunctionReference* ctor;
  static Napi::Function Init(Napi::Env env) {
    Napi::Function f =
        DefineClass(env, "NativeCommunicator",
                    {InstanceMethod<&NativeCommunicator::AllReduce>("allReduce"),
                     InstanceMethod<&NativeCommunicator::WaitIdle>("waitIdle"),
                     InstanceMethod<&NativeCommunicator::Dispose>("dispose"),
                     InstanceAccessor<&NativeCommunicator::Backend>("backend"),
                     InstanceAccessor<&NativeCommunicator::Capturable>("graphCapturable")});
    ctor = new Napi::FunctionReference(Napi::Persistent(f));
    return f;
  }
  explicit NativeCommunicator(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<NativeCommunicator>(info) {}
  std::unique_ptr<ops::Communicator> comm;

 private:
  // (tensors: one per rank, in rank order)
  Napi::Value AllReduce(const Napi::CallbackInfo& info) {
    G3_BODY {
      if (!comm) throw Status(StatusCode::kDisposed, "communicator was disposed");
      if (!info[0].IsArray()) throw arg_error("allReduce: tensors must be an array");
      Napi::Array a = info[0].As<Napi::Array>();
      std::vector<TensorRef> ts;
      for (uint32_t i = 0; i < a.Length(); ++i) {
        std::string what = "tensors[" + std::to_string(i) + "]";
        ts.push_back(to_tensor(a.Get(i), what.c_str()));
      }
      throw_if(env, comm->all_reduce_sum(ts));
      return env.Undefined();
    }
    G3_END
  }
  void Dispose(const Napi::CallbackInfo&) { comm.reset(); }
  Napi::Value Backend(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), comm ? comm->backend() : "disposed");
  }
  Napi::Value Capturable(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), comm != nullptr && comm->graph_capturable());
  }
  // (blocks the calling thread until every rank's device is idle)
  Napi::Value WaitIdle(const Napi::CallbackInfo& info) {
    G3_BODY {
      if (!comm) throw Status(StatusCode::kDisposed, "communicator was disposed");
      throw_if(env, comm->wait_idle());
      return env.Undefined();
    }
    G3_END
  }
};
Napi::FunctionReference* NativeCommunicator::ctor = nullptr;

// (devices: number[], backend: "auto" | "nccl" | "host")
G3_ENTRY(CommunicatorCreate){G3_BODY{if (!info[0].IsArray()) throw arg_error("devices: an array");
if (!info[1].IsString()) throw arg_error("backend: a string");
Napi::Array a = info[0].As<Napi::Array>();
std::vector<int> devices;
for (uint32_t i = 0; i < a.Length(); ++i) devices.push_back(int(to_i64(a.Get(i), "device")));
std::unique_ptr<ops::Communicator> c;
throw_if(env, ops::Communicator::create(devices, info[1].As<Napi::String>().Utf8Value(), &c));
Napi::Object o = NativeCommunicator::ctor->New({});
NativeCommunicator::Unwrap(o)->comm = std::move(c);
return o;
}
G3_END
}
// (src, srcCol, dst, dstCol, width)
G3_ENTRY(CopyColumns){
    G3_BODY{OP_RESULT(ops::copy_columns(T(0, "src"), to_i64(info[1], "srcCol"), T(2, "dst"),
                                        to_i64(info[3], "dstCol"), to_i64(info[4], "width")));
}
G3_END
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeBuffer", NativeBuffer::Init(env));
  exports.Set("NativeGraph", NativeGraph::Init(env));
  exports.Set("NativeReadback", NativeReadback::Init(env));
  exports.Set("NativeCommunicator", NativeCommunicator::Init(env));
#define EXPORT(name, fn) exports.Set(name, Napi::Function::New(env, fn, name))
  EXPORT("buildInfo", BuildInfo);
  EXPORT("deviceCount", DeviceCount);
  EXPORT("deviceInfo", DeviceInfoJs);
  EXPORT("memoryInfo", MemoryInfo);
  EXPORT("alloc", Alloc);
  EXPORT("copyFromHost", CopyFromHost);
  EXPORT("copyToHost", CopyToHost);
  EXPORT("copyBuffer", CopyBuffer);
  EXPORT("fill", Fill);
  EXPORT("synchronize", Synchronize);
  EXPORT("injectFault", InjectFault);
  EXPORT("graphBegin", GraphBegin);
  EXPORT("readbackCreate", ReadbackCreate);
  EXPORT("graphEnd", GraphEnd);
  EXPORT("matmul", Matmul);
  EXPORT("rmsnorm", RmsNorm);
  EXPORT("rmsnormAdd", RmsNormAdd);
  EXPORT("layernorm", LayerNorm);
  EXPORT("geluMul", GeluMul);
  EXPORT("add", Add);
  EXPORT("scale", Scale);
  EXPORT("embedding", Embedding);
  EXPORT("softmax", Softmax);
  EXPORT("argmax", Argmax);
  EXPORT("topk", Topk);
  EXPORT("rope", Rope);
  EXPORT("qkNormRope", QkNormRope);
  EXPORT("rmsnormAddRmsnorm", RmsNormAddRmsNorm);
  EXPORT("attentionPrefill", AttentionPrefill);
  EXPORT("attentionDecode", AttentionDecode);
  EXPORT("attentionDecodeQkv", AttentionDecodeQkv);
  EXPORT("attentionDecodeWorkspaceFloats", AttentionDecodeWorkspaceFloats);
  EXPORT("biasAdd", BiasAdd);
  EXPORT("patchify", Patchify);
  EXPORT("attentionPrefillQkv", AttentionPrefillQkv);
  EXPORT("avgPool2d", AvgPool2d);
  EXPORT("cast", Cast);
  EXPORT("quantize", Quantize);
  EXPORT("dequantize", Dequantize);
  EXPORT("repack", Repack);
  EXPORT("copyRows", CopyRows);
  EXPORT("communicatorCreate", CommunicatorCreate);
  EXPORT("copyColumns", CopyColumns);
#undef EXPORT
  return exports;
}

}  // namespace
}  // namespace gemma3

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  return gemma3::Init(env, exports);
}
NODE_API_MODULE(gemma3, InitAddon)
