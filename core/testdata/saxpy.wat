;; A wasm kernel for tests (ABI v1, core/src/compute/wasm_kernel.rs): `run` computes
;; out[i] = a * x[i] + y[i] over the chunk's cells of a 1-D grid, `a` the first parameter
;; (f32), x and y the inputs after the output in the bindings table. The other entries misbehave
;; on purpose: `spin` never returns, `boom` traps, `fail` returns an error code, `wild`
;; writes outside its memory, `hog` allocates without end.
(module
  (memory (export "memory") 1 64)
  (global $heap (mut i32) (i32.const 1024))

  (func $alloc (export "pc_alloc") (param $len i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.shr_u
                (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                (i32.const 16)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))

  (func (export "run") (param $b i32) (param $n i32) (result i32)
    (local $u i32) (local $off i32) (local $size i32) (local $a f32)
    (local $out i32) (local $x i32) (local $y i32) (local $i i32) (local $at i32)
    ;; records { binding, ptr, len }: parameters, output, x, y
    (if (i32.ne (local.get $n) (i32.const 4)) (then (return (i32.const 7))))
    (local.set $u (i32.load offset=4 (local.get $b)))
    (if (i32.lt_u (i32.load offset=8 (local.get $b)) (i32.const 52)) (then (return (i32.const 8))))
    (local.set $off (i32.load (local.get $u)))
    (local.set $size (i32.load offset=16 (local.get $u)))
    (local.set $a (f32.load offset=48 (local.get $u)))
    (local.set $out (i32.load offset=16 (local.get $b)))
    (local.set $x (i32.load offset=28 (local.get $b)))
    (local.set $y (i32.load offset=40 (local.get $b)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $size)))
        (local.set $at (i32.shl (i32.add (local.get $off) (local.get $i)) (i32.const 2)))
        (f32.store
          (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 2)))
          (f32.add
            (f32.mul (local.get $a) (f32.load (i32.add (local.get $x) (local.get $at))))
            (f32.load (i32.add (local.get $y) (local.get $at)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  (func (export "spin") (param i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0))

  (func (export "boom") (param i32 i32) (result i32)
    unreachable)

  (func (export "fail") (param i32 i32) (result i32)
    (i32.const 42))

  (func (export "wild") (param i32 i32) (result i32)
    (i32.store (i32.const -4) (i32.const 1))
    (i32.const 0))

  (func (export "hog") (param i32 i32) (result i32)
    (loop $more
      (br_if $more (i32.ne (call $alloc (i32.const 65536)) (i32.const 0))))
    (i32.const 3)))
