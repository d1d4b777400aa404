// The compute module: runs Gemm, Vec, Loads into the accumulator buffer and Sync instructions
// that target it, in order. It owns the accumulator buffer, the MAC array and the vector unit.
// Neighbours: the load module ("prev") and the store module ("next").
//
// GEMM pipeline, one activation row per cycle:
//   issue  : read act[act.row(o,i)] and (unless overwriting) acc[acc.row(o,i)]
//   stage 1: dot products with the stationary weight tile, combined with the old row (mode)
//   stage 2: write acc[acc.row(o,i)]
// Iterations are strictly sequential in the ISA, so a row read while one of the two previous
// iterations is still writing it (stage 2 now, or written last cycle, which the synchronous read
// did not see yet) is forwarded from the pipeline instead of taken from the buffer.
//
// Requantization beside the GEMMs: a VEC reads its three parameter rows in the foreground, then
// hands its rows to the vector unit and the module accepts the next instruction at once. The
// accumulator is two banks (lower and upper half), each with its own read port, so the next
// block's GEMMs run in one bank while the requantization reads the other. Program order stays
// the semantics; while a VEC runs, the head instruction waits for it when
//   - it is a GEMM whose rows share a bank with the VEC's rows (one read port per bank),
//   - it is an accumulator load whose rows overlap the VEC's rows (it would overwrite them),
//   - it is a VEC (one vector unit),
//   - it pushes a token to the store module (which may then read the VEC's output rows), or to
//     the load module while the VEC also does (one push per edge and cycle).
// A token to the load module only says that activation and weight rows are free; a VEC reads
// neither, and every foreground instruction before it has completed, so it may go ahead. The
// rows each instruction touches come with it from the issue stage (acc_lo_i, acc_hi_i).
//
// Back-to-back GEMMs: in the cycle the last row of a GEMM issues, the next GEMM may be accepted.
// Its weight tile is read while the old last row passes stage 1 (which still sees the old weight
// register) and its rows follow after one cycle; the old GEMM completes (pushes its tokens) three
// cycles later, once its last row is written. Forwarding works across the two, as the ISA runs
// them in sequence.
module sinter_mod_compute #(
  parameter int unsigned ROWS      = sinter_isa_pkg::DEFAULT_ROWS,
  parameter int unsigned COLS      = sinter_isa_pkg::DEFAULT_COLS,
  parameter int unsigned ACT_DEPTH = sinter_isa_pkg::DEFAULT_ACT_DEPTH,
  parameter int unsigned WGT_DEPTH = sinter_isa_pkg::DEFAULT_WGT_DEPTH,
  parameter int unsigned ACC_DEPTH = sinter_isa_pkg::DEFAULT_ACC_DEPTH,
  parameter int unsigned OUT_DEPTH = sinter_isa_pkg::DEFAULT_OUT_DEPTH,
  parameter int unsigned BUS_BYTES = sinter_isa_pkg::DEFAULT_BUS_BYTES,
  parameter int unsigned ACT_AW    = $clog2(ACT_DEPTH),
  parameter int unsigned WGT_AW    = $clog2(WGT_DEPTH),
  parameter int unsigned OUT_AW    = $clog2(OUT_DEPTH),
  parameter int unsigned ACC_AW    = $clog2(ACC_DEPTH)
) (
  input  logic                   clk_i,
  input  logic                   rst_ni,
  input  logic                   abort_i,
  // instruction queue
  input  logic                   q_valid_i,
  input  logic [sinter_isa_pkg::INSN_BITS-1:0] q_insn_i,
  input  logic [ACC_AW-1:0]      acc_lo_i,   // accumulator rows the head instruction touches
  input  logic [ACC_AW-1:0]      acc_hi_i,
  output logic                   q_pop_o,
  // tokens: prev = load module, next = store module
  input  logic                   tok_prev_avail_i,
  input  logic                   tok_next_avail_i,
  output logic                   tok_pop_prev_o,
  output logic                   tok_pop_next_o,
  output logic                   tok_push_prev_o,
  output logic                   tok_push_next_o,
  output logic [1:0]             insn_done_o,  // instructions completed this cycle
  output logic                   idle_o,
  output logic                   mac_active_o,
  // memory read requester (accumulator loads)
  output logic                   req_valid_o,
  input  logic                   req_ready_i,
  output logic [31:0]            req_addr_o,
  output logic [15:0]            req_len_o,
  input  logic                   resp_valid_i,
  input  logic [BUS_BYTES*8-1:0] resp_data_i,
  // buffers owned by the other modules
  output logic                   act_re_o,
  output logic [ACT_AW-1:0]      act_raddr_o,
  input  logic [ROWS*8-1:0]      act_rdata_i,
  output logic                   wgt_re_o,
  output logic [WGT_AW-1:0]      wgt_raddr_o,
  input  logic [ROWS*COLS*8-1:0] wgt_rdata_i,
  output logic                   out_we_o,
  output logic [OUT_AW-1:0]      out_waddr_o,
  output logic [COLS*8-1:0]      out_wdata_o
);
  localparam int unsigned AW_ROW  = COLS * 32;
  localparam int unsigned E_ACC   = COLS * 4;
  localparam int unsigned ACC_NCH = (E_ACC > BUS_BYTES) ? E_ACC / BUS_BYTES : 1;
  localparam int unsigned BW      = 8;
  localparam int unsigned LB      = $clog2(BUS_BYTES);
  localparam int unsigned BANK_AW = ACC_AW - 1;  // rows per bank: half the buffer

  typedef enum logic [2:0] {
    S_IDLE, S_LDACC, S_G_WGT, S_G_RUN, S_G_DRAIN, S_V_PARAM
  } state_e;

  sinter_isa_pkg::dma_insn_t  d;
  sinter_isa_pkg::gemm_insn_t g;
  sinter_isa_pkg::vec_insn_t  v;
  assign d = q_insn_i;
  assign g = q_insn_i;
  assign v = q_insn_i;

  state_e     state_q;
  logic [3:0] deps_q;
  logic       accept, complete;
  logic [3:0] opcode;
  assign opcode = d.opcode;

  // ---- the vector unit's state (it runs beside the foreground, see the top) ----------------------
  logic              vu_busy_q;   // from a VEC's accept to its completion
  logic              vu_run_q;    // issuing rows
  logic              vu_drain_q;  // all rows issued, the pipeline drains
  logic [3:0]        vu_deps_q;
  logic [ACC_AW-1:0] vu_lo_q, vu_hi_q;
  logic              vu_done;

  // Whether the head instruction may start while the vector unit is busy (the rules at the top).
  logic clear_of_vu, vu_push_clash;
  assign vu_push_clash = d.deps[sinter_isa_pkg::DEP_PUSH_NEXT] ||
                         (d.deps[sinter_isa_pkg::DEP_PUSH_PREV] &&
                          vu_deps_q[sinter_isa_pkg::DEP_PUSH_PREV]);
  always_comb begin
    if (!vu_busy_q) begin
      clear_of_vu = 1'b1;
    end else if (vu_push_clash) begin
      clear_of_vu = 1'b0;
    end else begin
      unique case (opcode)
        sinter_isa_pkg::OP_GEMM:
          clear_of_vu = (acc_hi_i[ACC_AW-1] < vu_lo_q[ACC_AW-1]) ||
                        (acc_lo_i[ACC_AW-1] > vu_hi_q[ACC_AW-1]);
        sinter_isa_pkg::OP_LOAD: clear_of_vu = (acc_hi_i < vu_lo_q) || (acc_lo_i > vu_hi_q);
        sinter_isa_pkg::OP_SYNC: clear_of_vu = 1'b1;
        default:                 clear_of_vu = 1'b0;
      endcase
    end
  end

  logic pend_q, pend_fire, overlap;
  logic [1:0] pend_cnt_q;
  logic [3:0] pend_deps_q;
  assign overlap = (state_q == S_G_RUN) && last_iter && !pend_q &&
                   (opcode == sinter_isa_pkg::OP_GEMM);
  assign accept = ((state_q == S_IDLE) || overlap) && q_valid_i && clear_of_vu &&
                  (!d.deps[sinter_isa_pkg::DEP_POP_PREV] || tok_prev_avail_i) &&
                  (!d.deps[sinter_isa_pkg::DEP_POP_NEXT] || tok_next_avail_i);
  assign q_pop_o        = accept;
  assign tok_pop_prev_o = accept && d.deps[sinter_isa_pkg::DEP_POP_PREV];
  assign tok_pop_next_o = accept && d.deps[sinter_isa_pkg::DEP_POP_NEXT];

  // ---- GEMM loop: walk a = acc, b = act -----------------------------------------------------------
  logic [15:0] a_row, b_row;
  logic        last_iter;
  sinter_walk2 u_gemm_loop (
    .clk_i,
    .start_i          (accept && opcode == sinter_isa_pkg::OP_GEMM),
    .step_i           (state_q == S_G_RUN),
    .n_outer_i        (g.n_outer),
    .n_inner_i        (g.n_inner),
    .a_base_i         (g.acc_base),
    .a_stride_outer_i (g.acc_stride_outer),
    .a_stride_inner_i (g.acc_stride_inner),
    .b_base_i         (g.act_base),
    .b_stride_outer_i (g.act_stride_outer),
    .b_stride_inner_i (g.act_stride_inner),
    .a_row_o          (a_row),
    .b_row_o          (b_row),
    .last_o           (last_iter)
  );

  // ---- GEMM state ---------------------------------------------------------------------------------
  logic [1:0]             mode_q, p1_mode_q;
  logic [ROWS*COLS*8-1:0] wreg_q;
  logic                   p1_valid_q, p2_valid_q, p3_valid_q;
  logic [ACC_AW-1:0]      p1_row_q, p2_row_q, p3_row_q;
  logic [AW_ROW-1:0]      p2_data_q, p3_data_q;
  logic [AW_ROW-1:0]      dot, acc_old, acc_new;

  // ---- VEC state ----------------------------------------------------------------------------------
  logic [1:0]        vcnt_q;
  logic [15:0]       param_q;
  logic [7:0]        zp_q, lo_q, hi_q;
  logic [AW_ROW-1:0] bias_q, mult_q, shift_q;
  logic              v1_valid_q;
  logic [15:0]       v1_dst_q;
  logic              rq_valid, rq_busy;
  logic [15:0]       rq_dst;
  logic [COLS*8-1:0] rq_data;

  // ---- accumulator buffer ports -------------------------------------------------------------------
  // fg_*: the foreground (GEMM rows, VEC parameters); vu_*: the vector unit's rows.
  logic              fg_re, vu_re, acc_we;
  logic [ACC_AW-1:0] fg_raddr, vu_raddr, acc_waddr;
  logic [AW_ROW-1:0] fg_rdata, vu_rdata, acc_wdata;
  logic [ACC_NCH-1:0] acc_wchunk;
  logic              dma_we;
  logic [ACC_AW-1:0] dma_waddr;
  logic [AW_ROW-1:0] dma_wdata;
  logic [ACC_NCH-1:0] dma_wchunk;
  logic              dma_done, dma_busy;

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i) begin
      state_q <= S_IDLE;
      deps_q  <= '0;
      vcnt_q  <= '0;
    end else begin
      if (accept) deps_q <= d.deps;
      unique case (state_q)
        S_IDLE: begin
          if (accept) begin
            unique case (opcode)
              sinter_isa_pkg::OP_LOAD: state_q <= S_LDACC;
              sinter_isa_pkg::OP_GEMM: state_q <= S_G_WGT;
              sinter_isa_pkg::OP_VEC:  state_q <= S_V_PARAM;
              default:                 state_q <= S_IDLE;   // Sync completes at once
            endcase
            vcnt_q <= '0;
          end
        end
        S_LDACC:   if (dma_done) state_q <= S_IDLE;
        S_G_WGT:   state_q <= S_G_RUN;
        S_G_RUN:   if (last_iter) state_q <= accept ? S_G_WGT : S_G_DRAIN;
        S_G_DRAIN: if (complete) state_q <= S_IDLE;
        S_V_PARAM: begin
          vcnt_q <= vcnt_q + 2'd1;
          if (vcnt_q == 2'd3) state_q <= S_IDLE;  // the vector unit takes over
        end
        default:   state_q <= S_IDLE;
      endcase
    end
  end

  always_ff @(posedge clk_i) begin
    if (accept && opcode == sinter_isa_pkg::OP_GEMM) mode_q <= g.mode;
  end

  // ---- GEMM datapath ------------------------------------------------------------------------------
  assign wgt_re_o    = accept && (opcode == sinter_isa_pkg::OP_GEMM);
  assign wgt_raddr_o = g.wgt[WGT_AW-1:0];
  assign act_re_o    = (state_q == S_G_RUN);
  assign act_raddr_o = b_row[ACT_AW-1:0];
  assign mac_active_o = (state_q == S_G_RUN);

  always_ff @(posedge clk_i) begin
    if (state_q == S_G_WGT) wreg_q <= wgt_rdata_i;
  end

  sinter_mac_array #(.ROWS(ROWS), .COLS(COLS)) u_array (
    .act_i (act_rdata_i),
    .wgt_i (wreg_q),
    .dot_o (dot)
  );

  always_comb begin
    if (p2_valid_q && p2_row_q == p1_row_q)      acc_old = p2_data_q;
    else if (p3_valid_q && p3_row_q == p1_row_q) acc_old = p3_data_q;
    else                                         acc_old = fg_rdata;
  end

  // Combine the product with the old row as the GEMM mode says (ISA `GemmMode`).
  for (genvar c = 0; c < COLS; c++) begin : g_acc
    logic signed [31:0] old_l, dot_l;
    assign old_l = acc_old[c*32 +: 32];
    assign dot_l = dot[c*32 +: 32];
    always_comb begin
      unique case (p1_mode_q)
        sinter_isa_pkg::GEMM_ADD: acc_new[c*32 +: 32] = old_l + dot_l;
        sinter_isa_pkg::GEMM_MAX: acc_new[c*32 +: 32] = (old_l > dot_l) ? old_l : dot_l;
        default:                  acc_new[c*32 +: 32] = dot_l;
      endcase
    end
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i) begin
      p1_valid_q <= 1'b0;
      p2_valid_q <= 1'b0;
      p3_valid_q <= 1'b0;
    end else begin
      p1_valid_q <= (state_q == S_G_RUN);
      p2_valid_q <= p1_valid_q;
      p3_valid_q <= p2_valid_q;
    end
  end

  always_ff @(posedge clk_i) begin
    p1_row_q   <= a_row[ACC_AW-1:0];
    p1_mode_q  <= mode_q;
    p2_row_q  <= p1_row_q;
    p2_data_q <= acc_new;
    p3_row_q  <= p2_row_q;
    p3_data_q <= p2_data_q;
  end

  // ---- VEC: parameters in the foreground ----------------------------------------------------------
  // Parameter rows param, param+1, param+2 are read in the first three cycles and latched one
  // cycle later as bias, multiplier and shift.
  always_ff @(posedge clk_i) begin
    if (accept && opcode == sinter_isa_pkg::OP_VEC) begin
      param_q <= v.param;
      zp_q    <= v.zero_point;
      lo_q    <= v.clamp_lo;
      hi_q    <= v.clamp_hi;
    end
    if (state_q == S_V_PARAM) begin
      unique case (vcnt_q)
        2'd1:    bias_q  <= fg_rdata;
        2'd2:    mult_q  <= fg_rdata;
        2'd3:    shift_q <= fg_rdata;
        default: ;
      endcase
    end
  end

  // ---- VEC: rows on the vector unit ---------------------------------------------------------------
  logic [15:0] s_row, t_row;  // source (accumulator) and destination (output) rows
  logic        v_last;
  sinter_walk2 u_vec_loop (
    .clk_i,
    .start_i          (accept && opcode == sinter_isa_pkg::OP_VEC),
    .step_i           (vu_run_q),
    .n_outer_i        (v.n_outer),
    .n_inner_i        (v.n_inner),
    .a_base_i         (v.src_base),
    .a_stride_outer_i (v.src_stride_outer),
    .a_stride_inner_i (v.src_stride_inner),
    .b_base_i         (v.dst_base),
    .b_stride_outer_i (v.dst_stride_outer),
    .b_stride_inner_i (v.dst_stride_inner),
    .a_row_o          (s_row),
    .b_row_o          (t_row),
    .last_o           (v_last)
  );

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i) begin
      vu_busy_q  <= 1'b0;
      vu_run_q   <= 1'b0;
      vu_drain_q <= 1'b0;
    end else if (accept && opcode == sinter_isa_pkg::OP_VEC) begin
      vu_busy_q <= 1'b1;
    end else begin
      if (state_q == S_V_PARAM && vcnt_q == 2'd3) vu_run_q <= 1'b1;
      if (vu_run_q && v_last) begin
        vu_run_q   <= 1'b0;
        vu_drain_q <= 1'b1;
      end
      if (vu_done) begin
        vu_busy_q  <= 1'b0;
        vu_drain_q <= 1'b0;
      end
    end
  end

  always_ff @(posedge clk_i) begin
    if (accept && opcode == sinter_isa_pkg::OP_VEC) begin
      vu_deps_q <= v.deps;
      vu_lo_q   <= acc_lo_i;
      vu_hi_q   <= acc_hi_i;
    end
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i) begin
      v1_valid_q <= 1'b0;
    end else begin
      v1_valid_q <= vu_run_q;
    end
  end

  always_ff @(posedge clk_i) begin
    v1_dst_q <= t_row;
  end

  sinter_requant #(.COLS(COLS)) u_requant (
    .clk_i,
    .rst_ni,
    .flush_i (abort_i),
    .valid_i (v1_valid_q),
    .dst_i   (v1_dst_q),
    .acc_i   (vu_rdata),
    .bias_i  (bias_q),
    .mult_i  (mult_q),
    .shift_i (shift_q),
    .zp_i    (zp_q),
    .lo_i    (lo_q),
    .hi_i    (hi_q),
    .valid_o (rq_valid),
    .dst_o   (rq_dst),
    .data_o  (rq_data),
    .busy_o  (rq_busy)
  );

  assign out_we_o    = rq_valid;
  assign out_waddr_o = rq_dst[OUT_AW-1:0];
  assign out_wdata_o = rq_data;
  assign vu_done     = vu_drain_q && !v1_valid_q && !rq_busy;

  // ---- accumulator buffer: two banks -------------------------------------------------------------
  always_comb begin
    fg_re    = 1'b0;
    fg_raddr = a_row[ACC_AW-1:0];
    unique case (state_q)
      S_G_RUN:   fg_re = (mode_q != sinter_isa_pkg::GEMM_OVERWRITE);
      S_V_PARAM: begin
        fg_re    = (vcnt_q != 2'd3);
        fg_raddr = param_q[ACC_AW-1:0] + ACC_AW'(vcnt_q);
      end
      default:   ;
    endcase
  end
  assign vu_re    = vu_run_q;
  assign vu_raddr = s_row[ACC_AW-1:0];

  always_comb begin
    if (state_q == S_LDACC) begin
      acc_we     = dma_we;
      acc_waddr  = dma_waddr;
      acc_wdata  = dma_wdata;
      acc_wchunk = dma_wchunk;
    end else begin
      acc_we     = p2_valid_q;
      acc_waddr  = p2_row_q;
      acc_wdata  = p2_data_q;
      acc_wchunk = '1;
    end
  end

  // The rules at the top keep the foreground and the vector unit in different banks whenever both
  // read; the vector unit has the port of the bank it reads, the foreground the other.
  logic              fg_bank_q, vu_bank_q;
  logic [AW_ROW-1:0] bank_rdata [2];
  for (genvar b = 0; b < 2; b++) begin : g_bank
    logic               re, vu_here;
    logic [BANK_AW-1:0] raddr;
    assign vu_here = vu_re && (vu_raddr[ACC_AW-1] == 1'(b));
    assign re      = vu_here || (fg_re && (fg_raddr[ACC_AW-1] == 1'(b)));
    assign raddr   = vu_here ? vu_raddr[BANK_AW-1:0] : fg_raddr[BANK_AW-1:0];
    sinter_sram #(.WIDTH(AW_ROW), .DEPTH(ACC_DEPTH / 2), .NCHUNK(ACC_NCH)) u_acc (
      .clk_i,
      .we_i     (acc_we && (acc_waddr[ACC_AW-1] == 1'(b))),
      .waddr_i  (acc_waddr[BANK_AW-1:0]),
      .wdata_i  (acc_wdata),
      .wchunk_i (acc_wchunk),
      .re_i     (re),
      .raddr_i  (raddr),
      .rdata_o  (bank_rdata[b])
    );
  end

  always_ff @(posedge clk_i) begin
    fg_bank_q <= fg_raddr[ACC_AW-1];
    vu_bank_q <= vu_raddr[ACC_AW-1];
  end
  assign fg_rdata = bank_rdata[fg_bank_q];
  assign vu_rdata = bank_rdata[vu_bank_q];

  // ---- accumulator loads --------------------------------------------------------------------------
  logic                   wr_valid, wr_pad;
  logic [15:0]            wr_row;
  logic [BW-1:0]          wr_beat;
  logic [LB-1:0]          wr_off;
  logic [BUS_BYTES*8-1:0] wr_data;

  sinter_rd_dma #(.BUS_BYTES(BUS_BYTES), .BW(BW)) u_dma (
    .clk_i,
    .rst_ni,
    .abort_i,
    .start_i      (accept && opcode == sinter_isa_pkg::OP_LOAD),
    .dram_base_i  (d.dram_base),
    .sram_base_i  (d.sram_base),
    .y_size_i     (d.y_size),
    .x_size_i     (d.x_size),
    .y_stride_i   (d.y_stride),
    .x_stride_i   (d.x_stride),
    .pad_top_i    (d.pad_top),
    .pad_bottom_i (d.pad_bottom),
    .pad_left_i   (d.pad_left),
    .pad_right_i  (d.pad_right),
    .beats_i      (BW'(ACC_NCH)),
    .busy_o       (dma_busy),
    .done_o       (dma_done),
    .req_valid_o,
    .req_ready_i,
    .req_addr_o,
    .req_len_o,
    .resp_valid_i,
    .resp_data_i,
    .wr_valid_o   (wr_valid),
    .wr_row_o     (wr_row),
    .wr_beat_o    (wr_beat),
    .wr_off_o     (wr_off),
    .wr_data_o    (wr_data),
    .wr_pad_o     (wr_pad)
  );

  // Accumulator loads pad with zero whatever pad_value says.
  sinter_row_writer #(.ELEM_BYTES(E_ACC), .BUS_BYTES(BUS_BYTES), .AW(ACC_AW), .BW(BW)) u_acc_wr (
    .valid_i    (wr_valid),
    .row_i      (wr_row),
    .beat_i     (wr_beat),
    .off_i      (wr_off),
    .data_i     (wr_data),
    .pad_i      (wr_pad),
    .pad_byte_i (8'd0),
    .we_o       (dma_we),
    .waddr_o    (dma_waddr),
    .wdata_o    (dma_wdata),
    .wchunk_o   (dma_wchunk)
  );

  // ---- completion ---------------------------------------------------------------------------------
  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i) begin
      pend_q      <= 1'b0;
      pend_cnt_q  <= '0;
      pend_deps_q <= '0;
    end else if (overlap && accept) begin
      pend_q      <= 1'b1;
      pend_cnt_q  <= 2'd2;
      pend_deps_q <= deps_q;
    end else if (pend_q) begin
      if (pend_cnt_q == 2'd0) pend_q <= 1'b0;
      else                    pend_cnt_q <= pend_cnt_q - 2'd1;
    end
  end
  // The overlapped GEMM's last row is written two cycles after it issued.
  assign pend_fire = pend_q && (pend_cnt_q == 2'd0);

  logic [3:0] done_deps;
  always_comb begin
    complete  = 1'b0;
    done_deps = deps_q;
    unique case (state_q)
      S_IDLE: begin
        complete  = accept && (opcode == sinter_isa_pkg::OP_SYNC);
        done_deps = d.deps;
      end
      S_LDACC:   complete = dma_done;
      S_G_DRAIN: complete = !p1_valid_q && !p2_valid_q;
      default:   ;
    endcase
  end

  // The pending GEMM always completes before the one that overlapped it (which needs at least a
  // weight cycle, a row and the drain), so the two never complete in the same cycle. A VEC may
  // complete beside a foreground instruction; the rules at the top keep their pushes on
  // different edges.
  logic       fg_done;
  logic [3:0] push_deps;
  assign fg_done         = complete || pend_fire;
  assign push_deps       = pend_fire ? pend_deps_q : done_deps;
  assign insn_done_o     = 2'(fg_done) + 2'(vu_done);
  assign tok_push_prev_o = (fg_done && push_deps[sinter_isa_pkg::DEP_PUSH_PREV]) ||
                           (vu_done && vu_deps_q[sinter_isa_pkg::DEP_PUSH_PREV]);
  assign tok_push_next_o = (fg_done && push_deps[sinter_isa_pkg::DEP_PUSH_NEXT]) ||
                           (vu_done && vu_deps_q[sinter_isa_pkg::DEP_PUSH_NEXT]);
  assign idle_o          = (state_q == S_IDLE) && !pend_q && !vu_busy_q;

  logic unused_compute;
  assign unused_compute = ^{dma_busy, d, g, v, rq_dst, param_q, a_row, b_row, s_row};
endmodule
