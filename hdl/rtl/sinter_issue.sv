// Decode, validate and dispatch, one instruction per cycle in program order.
//
// The checks are exactly those of the ISA's `Instruction::decode` and `Instruction::validate`:
// an unknown opcode, a bad enum value, non-zero reserved bits, an empty loop or transfer, a
// dependency flag naming a missing neighbour, a store with padding, a load into the output buffer
// or a store from another buffer are illegal; then on-chip rows out of range; then DRAM
// misalignment. The first refused instruction raises `fault_o` with its code and index.
module sinter_issue #(
  parameter int unsigned ROWS      = sinter_isa_pkg::DEFAULT_ROWS,
  parameter int unsigned COLS      = sinter_isa_pkg::DEFAULT_COLS,
  parameter int unsigned ACT_DEPTH = sinter_isa_pkg::DEFAULT_ACT_DEPTH,
  parameter int unsigned WGT_DEPTH = sinter_isa_pkg::DEFAULT_WGT_DEPTH,
  parameter int unsigned ACC_DEPTH = sinter_isa_pkg::DEFAULT_ACC_DEPTH,
  parameter int unsigned OUT_DEPTH = sinter_isa_pkg::DEFAULT_OUT_DEPTH,
  parameter int unsigned BUS_BYTES = sinter_isa_pkg::DEFAULT_BUS_BYTES
) (
  input  logic        clk_i,
  input  logic        rst_ni,
  input  logic        abort_i,
  input  logic        start_i,
  input  logic        running_i,
  input  logic [31:0] prog_len_i,
  input  logic        insn_valid_i,
  input  logic [sinter_isa_pkg::INSN_BITS-1:0] insn_i,
  output logic        insn_pop_o,
  // module queues: 0 load, 1 compute, 2 store (the ISA's Module numbering)
  input  logic [2:0]  queue_full_i,
  output logic [2:0]  queue_push_o,
  // accumulator rows the instruction touches (GEMM, VEC source, accumulator load), for the
  // compute module's checks against the vector unit
  output logic [$clog2(ACC_DEPTH)-1:0] acc_lo_o,
  output logic [$clog2(ACC_DEPTH)-1:0] acc_hi_o,
  output logic        fault_o,
  output logic [7:0]  fault_code_o,
  output logic [31:0] pc_o,
  output logic        all_dispatched_o
);
  // Element bytes and the DRAM alignment of each buffer (HwConfig::element_bytes/dram_alignment).
  localparam int unsigned E_ACT = ROWS;
  localparam int unsigned E_WGT = ROWS * COLS;
  localparam int unsigned E_ACC = COLS * 4;
  localparam int unsigned E_OUT = COLS;
  localparam logic [31:0] AMASK_ACT = 32'((E_ACT < BUS_BYTES) ? E_ACT : BUS_BYTES) - 32'd1;
  localparam logic [31:0] AMASK_WGT = 32'((E_WGT < BUS_BYTES) ? E_WGT : BUS_BYTES) - 32'd1;
  localparam logic [31:0] AMASK_ACC = 32'((E_ACC < BUS_BYTES) ? E_ACC : BUS_BYTES) - 32'd1;
  localparam logic [31:0] AMASK_OUT = 32'((E_OUT < BUS_BYTES) ? E_OUT : BUS_BYTES) - 32'd1;

  sinter_isa_pkg::dma_insn_t  d;
  sinter_isa_pkg::gemm_insn_t g;
  sinter_isa_pkg::vec_insn_t  v;
  sinter_isa_pkg::sync_insn_t s;
  assign d = insn_i;
  assign g = insn_i;
  assign v = insn_i;
  assign s = insn_i;

  logic [3:0] opcode;
  logic [3:0] deps;
  assign opcode = d.opcode;
  assign deps   = d.deps;

  logic is_load, is_store, is_dma, is_gemm, is_vec, is_sync;
  assign is_load  = (opcode == sinter_isa_pkg::OP_LOAD);
  assign is_store = (opcode == sinter_isa_pkg::OP_STORE);
  assign is_dma   = is_load || is_store;
  assign is_gemm  = (opcode == sinter_isa_pkg::OP_GEMM);
  assign is_vec   = (opcode == sinter_isa_pkg::OP_VEC);
  assign is_sync  = (opcode == sinter_isa_pkg::OP_SYNC);

  // ---- target module ----------------------------------------------------------------------------
  logic [1:0] target;
  always_comb begin
    target = sinter_isa_pkg::MOD_COMPUTE;
    if (is_load) begin
      target = (d.buffer == sinter_isa_pkg::BUF_ACT || d.buffer == sinter_isa_pkg::BUF_WGT)
               ? sinter_isa_pkg::MOD_LOAD : sinter_isa_pkg::MOD_COMPUTE;
    end else if (is_store) begin
      target = sinter_isa_pkg::MOD_STORE;
    end else if (is_sync) begin
      target = s.target;
    end
  end

  // ---- decode errors ----------------------------------------------------------------------------
  logic bad_decode;
  always_comb begin
    bad_decode = 1'b0;
    if (is_dma)       bad_decode = (d.rsvd_10 != '0) || (d.rsvd_216 != '0);
    else if (is_gemm) bad_decode = (g.mode == 2'd3) || (g.rsvd_10 != '0) || (g.rsvd_160 != '0);
    else if (is_vec)  bad_decode = (v.op != sinter_isa_pkg::VEC_REQUANT) ||
                                   (v.rsvd_12 != '0) || (v.rsvd_184 != '0);
    else if (is_sync) bad_decode = (s.target == 2'd3) || (s.rsvd_10 != '0);
    else              bad_decode = 1'b1;  // unknown opcode
  end

  // ---- validate: dependency flags -----------------------------------------------------------------
  logic bad_deps;
  assign bad_deps =
    (target == sinter_isa_pkg::MOD_LOAD &&
     (deps[sinter_isa_pkg::DEP_POP_PREV] || deps[sinter_isa_pkg::DEP_PUSH_PREV])) ||
    (target == sinter_isa_pkg::MOD_STORE &&
     (deps[sinter_isa_pkg::DEP_POP_NEXT] || deps[sinter_isa_pkg::DEP_PUSH_NEXT]));

  // ---- validate: DMA ----------------------------------------------------------------------------
  logic        dma_illegal, dma_bounds, dma_misaligned;
  logic [16:0] dma_h, dma_w;
  logic [34:0] dma_end;
  logic [31:0] dma_depth, dma_amask;
  assign dma_h   = 17'(d.pad_top) + 17'(d.y_size) + 17'(d.pad_bottom);
  assign dma_w   = 17'(d.pad_left) + 17'(d.x_size) + 17'(d.pad_right);
  assign dma_end = 35'(d.sram_base) + 35'(34'(dma_h) * 34'(dma_w));
  always_comb begin
    unique case (d.buffer)
      sinter_isa_pkg::BUF_ACT: begin dma_depth = 32'(ACT_DEPTH); dma_amask = AMASK_ACT; end
      sinter_isa_pkg::BUF_WGT: begin dma_depth = 32'(WGT_DEPTH); dma_amask = AMASK_WGT; end
      sinter_isa_pkg::BUF_ACC: begin dma_depth = 32'(ACC_DEPTH); dma_amask = AMASK_ACC; end
      default:                 begin dma_depth = 32'(OUT_DEPTH); dma_amask = AMASK_OUT; end
    endcase
  end
  assign dma_illegal =
    (is_store && d.buffer != sinter_isa_pkg::BUF_OUT) ||
    (is_load && d.buffer == sinter_isa_pkg::BUF_OUT) ||
    (is_store && ({d.pad_top, d.pad_bottom, d.pad_left, d.pad_right, d.pad_value} != '0)) ||
    (d.x_size == '0) || (d.y_size == '0);
  assign dma_bounds     = dma_end > 35'(dma_depth);
  assign dma_misaligned = ((d.dram_base | d.x_stride | d.y_stride) & dma_amask) != '0;

  // ---- validate: GEMM and VEC loops ---------------------------------------------------------------
  // Both formats have two walks (GEMM: acc, act; VEC: src, dst) and the same loop counts.
  logic [15:0] n_outer, n_inner;
  logic [15:0] wa_base, wa_so, wa_si, wb_base, wb_so, wb_si;
  logic [33:0] wa_max, wb_max;
  logic        loop_empty, loop_bounds;
  always_comb begin
    if (is_vec) begin
      n_outer = v.n_outer;  n_inner = v.n_inner;
      wa_base = v.src_base; wa_so = v.src_stride_outer; wa_si = v.src_stride_inner;
      wb_base = v.dst_base; wb_so = v.dst_stride_outer; wb_si = v.dst_stride_inner;
    end else begin
      n_outer = g.n_outer;  n_inner = g.n_inner;
      wa_base = g.acc_base; wa_so = g.acc_stride_outer; wa_si = g.acc_stride_inner;
      wb_base = g.act_base; wb_so = g.act_stride_outer; wb_si = g.act_stride_inner;
    end
  end
  // Walk::max_row: base + (outer-1)*stride_outer + (inner-1)*stride_inner, computed without
  // overflow.
  logic [15:0] outer_m1, inner_m1;
  assign outer_m1 = n_outer - 16'd1;
  assign inner_m1 = n_inner - 16'd1;
  assign wa_max = 34'(wa_base) + 34'(32'(outer_m1) * 32'(wa_so)) + 34'(32'(inner_m1) * 32'(wa_si));
  assign wb_max = 34'(wb_base) + 34'(32'(outer_m1) * 32'(wb_so)) + 34'(32'(inner_m1) * 32'(wb_si));
  assign loop_empty = (n_outer == '0) || (n_inner == '0);
  always_comb begin
    if (is_vec) begin
      loop_bounds = (34'(v.param) + 34'd2 >= 34'(ACC_DEPTH)) ||
                    (wa_max >= 34'(ACC_DEPTH)) || (wb_max >= 34'(OUT_DEPTH));
    end else begin
      loop_bounds = (32'(g.wgt) >= 32'(WGT_DEPTH)) ||
                    (wa_max >= 34'(ACC_DEPTH)) || (wb_max >= 34'(ACT_DEPTH));
    end
  end

  // Valid instructions only reach a queue, so the rows fit the buffer and the truncation is exact.
  localparam int unsigned ACC_AW = $clog2(ACC_DEPTH);
  always_comb begin
    if (is_load) begin
      acc_lo_o = d.sram_base[ACC_AW-1:0];
      acc_hi_o = ACC_AW'(dma_end - 35'd1);
    end else begin
      acc_lo_o = wa_base[ACC_AW-1:0];
      acc_hi_o = wa_max[ACC_AW-1:0];
    end
  end

  // ---- verdict ----------------------------------------------------------------------------------
  logic illegal, bounds, misaligned;
  assign illegal    = bad_decode || bad_deps ||
                      (is_dma && dma_illegal) || ((is_gemm || is_vec) && loop_empty);
  assign bounds     = (is_dma && dma_bounds) || ((is_gemm || is_vec) && loop_bounds);
  assign misaligned = is_dma && dma_misaligned;

  logic [7:0] code;
  always_comb begin
    if (illegal)         code = sinter_isa_pkg::ERR_ILLEGAL_INSN;
    else if (bounds)     code = sinter_isa_pkg::ERR_SRAM_BOUNDS;
    else if (misaligned) code = sinter_isa_pkg::ERR_MISALIGNED;
    else                 code = sinter_isa_pkg::ERR_NONE;
  end

  // ---- dispatch ---------------------------------------------------------------------------------
  logic [31:0] pc_q;
  logic [31:0] len_q;  // PROG_LEN as sampled at start: the register may change during a run
  logic        live;
  assign live         = running_i && insn_valid_i && !abort_i;
  assign fault_o      = live && (code != sinter_isa_pkg::ERR_NONE);
  assign fault_code_o = code;
  logic target_full;
  always_comb begin
    unique case (target)
      sinter_isa_pkg::MOD_LOAD:    target_full = queue_full_i[0];
      sinter_isa_pkg::MOD_COMPUTE: target_full = queue_full_i[1];
      sinter_isa_pkg::MOD_STORE:   target_full = queue_full_i[2];
      default:                     target_full = 1'b1;  // refused above
    endcase
  end
  assign insn_pop_o = live && !fault_o && !target_full;
  always_comb begin
    queue_push_o    = '0;
    queue_push_o[0] = insn_pop_o && (target == sinter_isa_pkg::MOD_LOAD);
    queue_push_o[1] = insn_pop_o && (target == sinter_isa_pkg::MOD_COMPUTE);
    queue_push_o[2] = insn_pop_o && (target == sinter_isa_pkg::MOD_STORE);
  end
  assign pc_o             = pc_q;
  assign all_dispatched_o = (pc_q == len_q);

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i || start_i) begin
      pc_q <= '0;
    end else if (insn_pop_o) begin
      pc_q <= pc_q + 32'd1;
    end
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i) begin
      len_q <= '0;
    end else if (start_i) begin
      len_q <= prog_len_i;
    end
  end

  // Opcode and deps are read through `d`; the VEC output fields only matter at execution.
  logic unused_fields;
  assign unused_fields = ^{g, v, s};
endmodule
