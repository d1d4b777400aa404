// The Sinter NPU: a decoupled access/execute machine. Instruction fetch feeds a decoder that
// validates every instruction and dispatches it in program order to one of three in-order
// modules (load, compute, store), which run concurrently and order themselves with dependency
// tokens. One memory read port is shared by fetch, the load module and the compute module's
// accumulator loads; the store module owns the write port.
module sinter_npu #(
  parameter int unsigned ROWS      = sinter_isa_pkg::DEFAULT_ROWS,
  parameter int unsigned COLS      = sinter_isa_pkg::DEFAULT_COLS,
  parameter int unsigned ACT_DEPTH = sinter_isa_pkg::DEFAULT_ACT_DEPTH,
  parameter int unsigned WGT_DEPTH = sinter_isa_pkg::DEFAULT_WGT_DEPTH,
  parameter int unsigned ACC_DEPTH = sinter_isa_pkg::DEFAULT_ACC_DEPTH,
  parameter int unsigned OUT_DEPTH = sinter_isa_pkg::DEFAULT_OUT_DEPTH,
  parameter int unsigned BUS_BYTES = sinter_isa_pkg::DEFAULT_BUS_BYTES
) (
  input  logic                   clk,
  input  logic                   rst_n,
  // register port
  input  logic                   reg_wr_en,
  input  logic [7:0]             reg_wr_addr,
  input  logic [31:0]            reg_wr_data,
  input  logic [7:0]             reg_rd_addr,
  output logic [31:0]            reg_rd_data,
  // memory read port
  output logic                   mem_rd_req_valid,
  input  logic                   mem_rd_req_ready,
  output logic [31:0]            mem_rd_req_addr,
  output logic [15:0]            mem_rd_req_len,
  input  logic                   mem_rd_resp_valid,
  input  logic [BUS_BYTES*8-1:0] mem_rd_resp_data,
  // memory write port
  output logic                   mem_wr_valid,
  input  logic                   mem_wr_ready,
  output logic [31:0]            mem_wr_addr,
  output logic [BUS_BYTES*8-1:0] mem_wr_data,
  output logic [BUS_BYTES-1:0]   mem_wr_strb,
  output logic                   busy
);
  localparam int unsigned IBITS   = sinter_isa_pkg::INSN_BITS;
  localparam int unsigned QDEPTH  = sinter_isa_pkg::QUEUE_DEPTH;
  localparam int unsigned ACT_AW  = $clog2(ACT_DEPTH);
  localparam int unsigned WGT_AW  = $clog2(WGT_DEPTH);
  localparam int unsigned OUT_AW  = $clog2(OUT_DEPTH);
  localparam int unsigned ACC_AW  = $clog2(ACC_DEPTH);
  localparam int unsigned ACT_NCH = (ROWS > BUS_BYTES) ? ROWS / BUS_BYTES : 1;
  localparam int unsigned WGT_NCH = (ROWS * COLS > BUS_BYTES) ? ROWS * COLS / BUS_BYTES : 1;
  localparam int unsigned BB      = BUS_BYTES * 8;

  // ---- registers and run control ----------------------------------------------------------------
  logic        start, soft_reset, running, fault, finished, abort;
  logic [31:0] prog_base, prog_len, pc;
  logic [7:0]  fault_code;
  logic        mac_active, all_dispatched;
  logic        insn_done_load, insn_done_store;
  logic [1:0]  insn_done_compute;  // the vector unit completes beside the foreground

  sinter_regs #(
    .ROWS(ROWS), .COLS(COLS), .ACT_DEPTH(ACT_DEPTH), .WGT_DEPTH(WGT_DEPTH),
    .ACC_DEPTH(ACC_DEPTH), .OUT_DEPTH(OUT_DEPTH), .BUS_BYTES(BUS_BYTES)
  ) u_regs (
    .clk_i         (clk),
    .rst_ni        (rst_n),
    .reg_wr_en_i   (reg_wr_en),
    .reg_wr_addr_i (reg_wr_addr),
    .reg_wr_data_i (reg_wr_data),
    .reg_rd_addr_i (reg_rd_addr),
    .reg_rd_data_o (reg_rd_data),
    .start_o       (start),
    .soft_reset_o  (soft_reset),
    .running_o     (running),
    .prog_base_o   (prog_base),
    .prog_len_o    (prog_len),
    .fault_i       (fault),
    .fault_code_i  (fault_code),
    .fault_pc_i    (pc),
    .finished_i    (finished),
    .mac_active_i  (mac_active),
    .insns_done_i  (3'(insn_done_load) + 3'(insn_done_compute) + 3'(insn_done_store))
  );

  assign abort = soft_reset || fault;

  // ---- memory read arbitration: 0 fetch, 1 compute (accumulator loads), 2 load ----------------
  logic [2:0]    rq_valid, rq_ready, rs_valid;
  logic [95:0]   rq_addr;
  logic [47:0]   rq_len;
  logic [BB-1:0] rs_data;
  logic          arb_idle;

  sinter_rd_arbiter #(.BUS_BYTES(BUS_BYTES), .NREQ(3)) u_arb (
    .clk_i            (clk),
    .rst_ni           (rst_n),
    .abort_i          (abort),
    .req_valid_i      (rq_valid),
    .req_addr_i       (rq_addr),
    .req_len_i        (rq_len),
    .req_ready_o      (rq_ready),
    .resp_valid_o     (rs_valid),
    .resp_data_o      (rs_data),
    .mem_req_valid_o  (mem_rd_req_valid),
    .mem_req_ready_i  (mem_rd_req_ready),
    .mem_req_addr_o   (mem_rd_req_addr),
    .mem_req_len_o    (mem_rd_req_len),
    .mem_resp_valid_i (mem_rd_resp_valid),
    .mem_resp_data_i  (mem_rd_resp_data),
    .idle_o           (arb_idle)
  );

  // ---- fetch, decode, dispatch ------------------------------------------------------------------
  logic             f_valid, f_pop;
  logic [IBITS-1:0] f_insn;
  logic [2:0]       q_full, q_push, q_empty, q_pop;
  logic [3*IBITS-1:0] q_head;  // module m's head at [m*IBITS +: IBITS]
  logic [ACC_AW-1:0]  f_acc_lo, f_acc_hi, q_acc_lo, q_acc_hi;

  sinter_prog_fetch #(.BUS_BYTES(BUS_BYTES)) u_fetch (
    .clk_i        (clk),
    .rst_ni       (rst_n),
    .abort_i      (abort),
    .start_i      (start),
    .prog_base_i  (prog_base),
    .prog_len_i   (prog_len),
    .req_valid_o  (rq_valid[0]),
    .req_ready_i  (rq_ready[0]),
    .req_addr_o   (rq_addr[31:0]),
    .req_len_o    (rq_len[15:0]),
    .resp_valid_i (rs_valid[0]),
    .resp_data_i  (rs_data),
    .insn_valid_o (f_valid),
    .insn_o       (f_insn),
    .insn_pop_i   (f_pop)
  );

  sinter_issue #(
    .ROWS(ROWS), .COLS(COLS), .ACT_DEPTH(ACT_DEPTH), .WGT_DEPTH(WGT_DEPTH),
    .ACC_DEPTH(ACC_DEPTH), .OUT_DEPTH(OUT_DEPTH), .BUS_BYTES(BUS_BYTES)
  ) u_decode (
    .clk_i            (clk),
    .rst_ni           (rst_n),
    .abort_i          (soft_reset),
    .start_i          (start),
    .running_i        (running),
    .prog_len_i       (prog_len),
    .insn_valid_i     (f_valid),
    .insn_i           (f_insn),
    .insn_pop_o       (f_pop),
    .queue_full_i     (q_full),
    .queue_push_o     (q_push),
    .acc_lo_o         (f_acc_lo),
    .acc_hi_o         (f_acc_hi),
    .fault_o          (fault),
    .fault_code_o     (fault_code),
    .pc_o             (pc),
    .all_dispatched_o (all_dispatched)
  );

  // Beside the compute queue: the accumulator rows of each instruction, worked out at issue.
  logic [$clog2(QDEPTH+1)-1:0] unused_acc_q_count;
  logic                        unused_acc_q_empty, unused_acc_q_full;
  sinter_queue #(.WIDTH(2*ACC_AW), .DEPTH(QDEPTH)) u_q_acc (
    .clk_i   (clk),
    .rst_ni  (rst_n),
    .flush_i (abort || start),
    .push_i  (q_push[1]),
    .wdata_i ({f_acc_hi, f_acc_lo}),
    .pop_i   (q_pop[1]),
    .rdata_o ({q_acc_hi, q_acc_lo}),
    .empty_o (unused_acc_q_empty),  // in step with the compute queue
    .full_o  (unused_acc_q_full),
    .count_o (unused_acc_q_count)
  );

  for (genvar m = 0; m < 3; m++) begin : g_queue
    logic [$clog2(QDEPTH+1)-1:0] unused_q_count;
    sinter_queue #(.WIDTH(IBITS), .DEPTH(QDEPTH)) u_q (
      .clk_i   (clk),
      .rst_ni  (rst_n),
      .flush_i (abort || start),
      .push_i  (q_push[m]),
      .wdata_i (f_insn),
      .pop_i   (q_pop[m]),
      .rdata_o (q_head[m*IBITS +: IBITS]),
      .empty_o (q_empty[m]),
      .full_o  (q_full[m]),
      .count_o (unused_q_count)
    );
  end

  // ---- dependency tokens: 0 load->compute, 1 compute->load, 2 compute->store, 3 store->compute --
  logic [3:0] tok_inc, tok_dec, tok_avail;
  sinter_tokens u_tokens (
    .clk_i   (clk),
    .rst_ni  (rst_n),
    .clear_i (abort || start),
    .inc_i   (tok_inc),
    .dec_i   (tok_dec),
    .avail_o (tok_avail)
  );

  // ---- buffers ----------------------------------------------------------------------------------
  logic                   act_we, act_re, wgt_we, wgt_re, out_we, out_re;
  logic [ACT_AW-1:0]      act_waddr, act_raddr;
  logic [WGT_AW-1:0]      wgt_waddr, wgt_raddr;
  logic [OUT_AW-1:0]      out_waddr, out_raddr;
  logic [ROWS*8-1:0]      act_wdata, act_rdata;
  logic [ACT_NCH-1:0]     act_wchunk;
  logic [ROWS*COLS*8-1:0] wgt_wdata, wgt_rdata;
  logic [WGT_NCH-1:0]     wgt_wchunk;
  logic [COLS*8-1:0]      out_wdata, out_rdata;

  sinter_sram #(.WIDTH(ROWS*8), .DEPTH(ACT_DEPTH), .NCHUNK(ACT_NCH)) u_act_buf (
    .clk_i (clk), .we_i (act_we), .waddr_i (act_waddr), .wdata_i (act_wdata),
    .wchunk_i (act_wchunk), .re_i (act_re), .raddr_i (act_raddr), .rdata_o (act_rdata)
  );
  sinter_sram #(.WIDTH(ROWS*COLS*8), .DEPTH(WGT_DEPTH), .NCHUNK(WGT_NCH)) u_wgt_buf (
    .clk_i (clk), .we_i (wgt_we), .waddr_i (wgt_waddr), .wdata_i (wgt_wdata),
    .wchunk_i (wgt_wchunk), .re_i (wgt_re), .raddr_i (wgt_raddr), .rdata_o (wgt_rdata)
  );
  sinter_sram #(.WIDTH(COLS*8), .DEPTH(OUT_DEPTH), .NCHUNK(1)) u_out_buf (
    .clk_i (clk), .we_i (out_we), .waddr_i (out_waddr), .wdata_i (out_wdata),
    .wchunk_i (1'b1), .re_i (out_re), .raddr_i (out_raddr), .rdata_o (out_rdata)
  );

  // ---- the three modules ------------------------------------------------------------------------
  logic [2:0] idle;

  sinter_mod_load #(
    .ROWS(ROWS), .COLS(COLS), .ACT_DEPTH(ACT_DEPTH), .WGT_DEPTH(WGT_DEPTH), .BUS_BYTES(BUS_BYTES)
  ) u_load (
    .clk_i            (clk),
    .rst_ni           (rst_n),
    .abort_i          (abort),
    .q_valid_i        (!q_empty[0]),
    .q_insn_i         (q_head[0*IBITS +: IBITS]),
    .q_pop_o          (q_pop[0]),
    .tok_next_avail_i (tok_avail[1]),
    .tok_pop_next_o   (tok_dec[1]),
    .tok_push_next_o  (tok_inc[0]),
    .insn_done_o      (insn_done_load),
    .idle_o           (idle[0]),
    .req_valid_o      (rq_valid[2]),
    .req_ready_i      (rq_ready[2]),
    .req_addr_o       (rq_addr[95:64]),
    .req_len_o        (rq_len[47:32]),
    .resp_valid_i     (rs_valid[2]),
    .resp_data_i      (rs_data),
    .act_we_o         (act_we),
    .act_waddr_o      (act_waddr),
    .act_wdata_o      (act_wdata),
    .act_wchunk_o     (act_wchunk),
    .wgt_we_o         (wgt_we),
    .wgt_waddr_o      (wgt_waddr),
    .wgt_wdata_o      (wgt_wdata),
    .wgt_wchunk_o     (wgt_wchunk)
  );

  sinter_mod_compute #(
    .ROWS(ROWS), .COLS(COLS), .ACT_DEPTH(ACT_DEPTH), .WGT_DEPTH(WGT_DEPTH),
    .ACC_DEPTH(ACC_DEPTH), .OUT_DEPTH(OUT_DEPTH), .BUS_BYTES(BUS_BYTES)
  ) u_compute (
    .clk_i            (clk),
    .rst_ni           (rst_n),
    .abort_i          (abort),
    .q_valid_i        (!q_empty[1]),
    .q_insn_i         (q_head[1*IBITS +: IBITS]),
    .acc_lo_i         (q_acc_lo),
    .acc_hi_i         (q_acc_hi),
    .q_pop_o          (q_pop[1]),
    .tok_prev_avail_i (tok_avail[0]),
    .tok_next_avail_i (tok_avail[3]),
    .tok_pop_prev_o   (tok_dec[0]),
    .tok_pop_next_o   (tok_dec[3]),
    .tok_push_prev_o  (tok_inc[1]),
    .tok_push_next_o  (tok_inc[2]),
    .insn_done_o      (insn_done_compute),
    .idle_o           (idle[1]),
    .mac_active_o     (mac_active),
    .req_valid_o      (rq_valid[1]),
    .req_ready_i      (rq_ready[1]),
    .req_addr_o       (rq_addr[63:32]),
    .req_len_o        (rq_len[31:16]),
    .resp_valid_i     (rs_valid[1]),
    .resp_data_i      (rs_data),
    .act_re_o         (act_re),
    .act_raddr_o      (act_raddr),
    .act_rdata_i      (act_rdata),
    .wgt_re_o         (wgt_re),
    .wgt_raddr_o      (wgt_raddr),
    .wgt_rdata_i      (wgt_rdata),
    .out_we_o         (out_we),
    .out_waddr_o      (out_waddr),
    .out_wdata_o      (out_wdata)
  );

  sinter_mod_store #(.COLS(COLS), .OUT_DEPTH(OUT_DEPTH), .BUS_BYTES(BUS_BYTES)) u_store (
    .clk_i            (clk),
    .rst_ni           (rst_n),
    .abort_i          (abort),
    .q_valid_i        (!q_empty[2]),
    .q_insn_i         (q_head[2*IBITS +: IBITS]),
    .q_pop_o          (q_pop[2]),
    .tok_prev_avail_i (tok_avail[2]),
    .tok_pop_prev_o   (tok_dec[2]),
    .tok_push_prev_o  (tok_inc[3]),
    .insn_done_o      (insn_done_store),
    .idle_o           (idle[2]),
    .out_re_o         (out_re),
    .out_raddr_o      (out_raddr),
    .out_rdata_i      (out_rdata),
    .mem_wr_valid_o   (mem_wr_valid),
    .mem_wr_ready_i   (mem_wr_ready),
    .mem_wr_addr_o    (mem_wr_addr),
    .mem_wr_data_o    (mem_wr_data),
    .mem_wr_strb_o    (mem_wr_strb)
  );

  // The program is done when every instruction has been dispatched and has completed.
  assign finished = running && all_dispatched && (&q_empty) && (&idle);

  // Busy until the run ends and every read already accepted by memory has answered.
  assign busy = running || !arb_idle;
endmodule
